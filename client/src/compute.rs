//! The entry points Web Workers call: each worker loads this same WASM module (see
//! `pages/worker.js`) and runs one lease at a time with the shared kernels, off the page's
//! main thread.

use wasm_bindgen::prelude::wasm_bindgen;

/// The number of primes in `[lo, hi)`. Numbers cross into JavaScript as f64, exact up to 2^53;
/// prime ranges end at 2^48.
#[wasm_bindgen]
pub fn compute_prime_count(lo: f64, hi: f64) -> f64 {
    kernels::primes::try_count_primes(lo as u64, hi as u64).map_or(-1.0, |count| count as f64)
}
