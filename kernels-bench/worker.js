// The WASM side of the kernel benchmark, in a dedicated module Web Worker as real jobs run:
// loads kernels-bench's wasm-bindgen output and runs every workload `reps` times, timing each
// call with performance.now().
import init, { workload_count, run_workload } from "/pkg/kernels_bench.js";

self.onmessage = async (event) => {
  const { reps } = event.data;
  await init({ module_or_path: "/pkg/kernels_bench_bg.wasm" });
  const workloads = [];
  for (let index = 0; index < workload_count(); index++) {
    const seconds = [];
    let checksum;
    for (let rep = 0; rep < reps; rep++) {
      const started = performance.now();
      checksum = run_workload(index);
      seconds.push((performance.now() - started) / 1000);
    }
    workloads.push({ checksum: checksum.toString(), seconds });
  }
  self.postMessage({ workloads });
};
