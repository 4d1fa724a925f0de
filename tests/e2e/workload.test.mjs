// Own workloads on the browser's engine: the example modules, prepared as devices receive
// them, run item by item through the compute bundle's `run_workload_item` in Chromium. Each
// outcome must be the one wasmtime gives natively (xtask writes those into
// OSTRICH_WORKLOAD_REFERENCE): the same output bytes, the same failure kind, the same digest
// — so replicas computed in a browser and in a native agent agree, and each way
// `broken.wat` breaks is named alike by both engines.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { BASE, launchProfile } from "./harness.mjs";

const REFERENCE = JSON.parse(readFileSync(process.env.OSTRICH_WORKLOAD_REFERENCE, "utf8"));


test("every example item gives in Chromium what it gives in wasmtime", async () => {
  const profile = await launchProfile();
  const page = await profile.context.newPage();
  await page.goto(`${BASE}/`);
  const results = await page.evaluate(async ({ modules, cases }) => {
    const bundle = await import("/pkg/client_compute.js");
    await bundle.default({ module_or_path: "/pkg/client_compute_bg.wasm" });
    const compiled = {};
    for (const [name, bytes] of Object.entries(modules)) {
      compiled[name] = await WebAssembly.compile(new Uint8Array(bytes));
    }
    return cases.map((c) => JSON.parse(bundle.run_workload_item(compiled[c.module], new Uint8Array(c.input))));
  }, REFERENCE);

  assert.equal(results.length, REFERENCE.cases.length);
  const kinds = new Set();
  REFERENCE.cases.forEach((expected, i) => {
    const got = results[i];
    const what = `${expected.module} item ${JSON.stringify(expected.input)}`;
    if ("output" in expected.outcome) {
      assert.deepEqual(got.outcome, expected.outcome, what);
    } else {
      // Engine messages differ and are not compared; the kind and, for a module error,
      // the module's own message are.
      assert.equal(got.outcome.failed?.kind, expected.outcome.failed.kind, `${what}: ${JSON.stringify(got.outcome)}`);
      if (expected.outcome.failed.kind === "module_error") {
        assert.equal(got.outcome.failed.message, expected.outcome.failed.message, what);
      }
      kinds.add(expected.outcome.failed.kind);
    }
    assert.equal(got.digest, expected.digest, what);
  });
  // The broken module reached every kind it is written to reach.
  for (const kind of ["unreachable", "memory_out_of_bounds", "output_out_of_bounds", "output_too_large",
    "stack_overflow", "divide_by_zero", "integer_overflow", "indirect_call", "module_error", "alloc_refused"]) {
    assert.ok(kinds.has(kind), `no item ended in ${kind}`);
  }
  assert.deepEqual(profile.errors, []);
});
