// A compute worker: loads the compute wasm (the kernels only, no UI) and runs one lease at a
// time off the page's main thread. It receives { lease_id, work } (work as the JSON text of a
// lease's `work`), plus { auth, api } for a workload lease, and answers
// { lease_id, result, ms } (result as the JSON text of a chunk result; "" and `error` when the
// lease could not be computed). { cancel: lease_id } stops a workload lease.
//
// A workload lease (docs/WORKLOADS.md) runs its items in a runner (runner.js), a worker of its
// own that is terminated and replaced when an item runs past the time limit. What to do when
// is decided by the compute wasm's `WorkloadLease`; this file only does the fetching, the
// timers and the messages. Modules are kept in Cache Storage by their SHA-256, so a device
// fetches each module once; a lease over an input set fetches its items' inputs with its
// ticket.
import init, { compute_work, WorkloadLease } from "/pkg/client_compute.js";

const ready = init({ module_or_path: "/pkg/client_compute_bg.wasm" });
const CACHE = "ostrich-modules";
const compiled = new Map(); // module SHA-256 → Promise<WebAssembly.Module>
let runner = null; // the runner worker, kept between leases
let current = null; // { lease_id, stop } of the workload lease running

self.onmessage = async (event) => {
  await ready;
  const { lease_id, work, auth, api, cancel } = event.data;
  if (cancel !== undefined) {
    if (current && current.lease_id === cancel) current.stop("the lease was cancelled");
    return;
  }
  const started = performance.now();
  let result = "";
  let error;
  try {
    result = auth ? await workload(lease_id, work, auth, api) : compute_work(work);
  } catch (err) {
    error = String(err && err.message ? err.message : err);
  }
  self.postMessage({ lease_id, result, error, ms: Math.round(performance.now() - started) });
};

async function workload(lease_id, work, auth, api) {
  const lease = new WorkloadLease(work);
  try {
    const module = await moduleOf(api, lease.module(), auth);
    const inputs = lease.fetchesInputs() ? lease.splitInputs(await inputsOf(api, auth)) : null;
    await runItems(lease_id, lease, module, work, inputs);
    const receipt = await upload(`${api}/outputs/${lease.name()}`, lease.file(), auth);
    return lease.result(receipt);
  } finally {
    lease.free();
  }
}

// The module compiled: kept from an earlier lease, from Cache Storage, or fetched.
function moduleOf(api, sha, auth) {
  if (!compiled.has(sha)) {
    const url = `${api}/modules/${sha}`;
    const loading = (async () => {
      const cache = self.caches ? await self.caches.open(CACHE).catch(() => null) : null;
      let response = cache ? await cache.match(url, { ignoreVary: true }) : undefined;
      if (!response) {
        response = await fetch(url, { headers: { authorization: auth } });
        if (!response.ok) throw new Error(`fetching the module: ${await refusal(response)}`);
        if (cache) await cache.put(url, response.clone()).catch(() => {});
      }
      return WebAssembly.compile(await response.arrayBuffer());
    })();
    loading.catch(() => compiled.delete(sha));
    // A swarm runs one job at a time: a few modules are plenty.
    if (compiled.size >= 4) compiled.delete(compiled.keys().next().value);
    compiled.set(sha, loading);
  }
  return compiled.get(sha);
}

// The records of a lease's inputs, from its job's input set.
async function inputsOf(api, auth) {
  const response = await fetch(`${api}/inputs`, { headers: { authorization: auth } });
  if (!response.ok) throw new Error(`fetching the inputs: ${await refusal(response)}`);
  return new Uint8Array(await response.arrayBuffer());
}

// Runs the lease's items on the runner, replacing it when `lease` says an item is out of time.
// `inputs`: the items' inputs when they come from an input set (else the runner derives them).
function runItems(lease_id, lease, module, work, inputs) {
  return new Promise((resolve, reject) => {
    let timer = null;
    const kill = () => {
      if (runner) runner.terminate();
      runner = null;
    };
    const finish = (err) => {
      clearTimeout(timer);
      current = null;
      if (runner) runner.onmessage = null;
      err ? reject(err) : resolve();
    };
    const step = () => {
      clearTimeout(timer);
      const next = JSON.parse(lease.poll(performance.now()));
      const { run, wait, done } = next;
      if ((run && run.kill) || (done && done.kill)) kill();
      if (done) return finish();
      if (run) {
        if (!runner) runner = new Worker("/runner.js", { type: "module" });
        const own = runner;
        own.onmessage = ({ data }) => {
          if (own !== runner) return;
          try {
            if (data.begun !== undefined) lease.begun(performance.now(), data.begun);
            else lease.finished(performance.now(), data.item, data.record);
          } catch (err) {
            kill();
            return finish(new Error(`item ${data.item}: ${err}`));
          }
          step();
        };
        own.postMessage({ module, work, inputs, from: run.from, end: run.end });
      }
      const at = (run || wait).wake_at;
      timer = setTimeout(step, Math.max(0, at - performance.now()));
    };
    current = { lease_id, stop: (why) => { kill(); finish(new Error(why)); } };
    step();
  });
}

// Uploads the outputs file; the receipt the result carries.
async function upload(url, file, auth) {
  const response = await fetch(url, {
    method: "PUT",
    headers: { authorization: auth, "content-type": "application/octet-stream" },
    body: file,
  });
  if (!response.ok) throw new Error(`uploading the outputs: ${await refusal(response)}`);
  return (await response.json()).receipt;
}

// The coordinator's reason for refusing a request.
async function refusal(response) {
  const body = await response.json().catch(() => null);
  return body && body.code ? `${response.status} ${body.code}: ${body.message}` : `HTTP ${response.status}`;
}
