//! The WASM entry points `worker.js` calls inside a dedicated Web Worker, where real jobs run.
//! Timing happens in the worker (`performance.now()`), around each call.

use wasm_bindgen::prelude::wasm_bindgen;

/// How many workloads there are; they are numbered from 0 in table order.
#[wasm_bindgen]
pub fn workload_count() -> u32 {
    crate::WORKLOADS.len() as u32
}

/// Runs workload `index` once and returns its checksum (a BigInt in JavaScript), or
/// `undefined` when there is no such workload.
#[wasm_bindgen]
pub fn run_workload(index: u32) -> Option<u64> {
    crate::run(index as usize)
}
