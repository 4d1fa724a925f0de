// A compute worker: loads the compute wasm (the kernels only, no UI) and runs one lease at a time
// off the page's main thread. It receives { lease_id, work } (work as the JSON text of a lease's
// `work`) and answers { lease_id, result, ms } (result as the JSON text of a chunk result, ""
// on failure).
import init, { compute_work } from "/pkg/client_compute.js";

const ready = init({ module_or_path: "/pkg/client_compute_bg.wasm" });

self.onmessage = async (event) => {
  await ready;
  const { lease_id, work } = event.data;
  const started = performance.now();
  const result = compute_work(work);
  self.postMessage({ lease_id, result, ms: Math.round(performance.now() - started) });
};
