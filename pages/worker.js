// A compute worker: loads the client's WASM module (the same file the page uses) and runs one
// lease at a time with the shared Rust kernels, off the page's main thread.
import init, { compute_prime_count } from "/pkg/client.js";

const ready = init({ module_or_path: "/pkg/client_bg.wasm" });

self.onmessage = async (event) => {
  await ready;
  const { lease_id, lo, hi } = event.data;
  const started = performance.now();
  const count = compute_prime_count(lo, hi);
  self.postMessage({ lease_id, count, ms: Math.round(performance.now() - started) });
};
