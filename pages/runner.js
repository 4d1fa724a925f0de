// A workload runner: runs items of one lease at a time in fresh instances of its module, and
// posts each item's record of the outputs file as it finishes. It receives
// { module, work, inputs, from, end } (`inputs`: the lease's items' inputs, when they come
// from an input set) and answers { begun: from } once loaded, then { item, record } per item.
// It never decides when to stop: the lease worker (worker.js) terminates it when an item runs
// past the time limit, which is the only way to stop a WebAssembly loop.
import init, { run_workload_input, run_workload_record } from "/pkg/client_compute.js";

const ready = init({ module_or_path: "/pkg/client_compute_bg.wasm" });

self.onmessage = async ({ data: { module, work, inputs, from, end } }) => {
  await ready;
  self.postMessage({ begun: from });
  const first = inputs ? JSON.parse(work).first_item : 0;
  for (let item = from; item < end; item++) {
    const record = inputs
      ? run_workload_input(module, inputs[item - first])
      : run_workload_record(module, work, item);
    self.postMessage({ item, record }, [record.buffer]);
  }
};
