//! The entry point Web Workers call: each worker loads this same WASM module (see
//! `pages/worker.js`) and runs one lease at a time with the shared kernels, off the page's
//! main thread.

use shared_protocol::{encode, Work};
use wasm_bindgen::prelude::wasm_bindgen;

/// Computes a lease given as the JSON of a [`Work`]; returns the JSON of its `WorkResult`, or
/// an empty string when the work cannot be read or computed.
#[wasm_bindgen]
pub fn compute_work(work: &str) -> String {
    serde_json::from_str::<Work>(work)
        .map_err(|err| err.to_string())
        .and_then(|work| crate::work::compute(&work))
        .map(|result| encode(&result))
        .unwrap_or_default()
}
