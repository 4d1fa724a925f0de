// Own workloads on the browser's engine: the example modules, prepared as devices receive
// them, run item by item through the compute bundle's `run_workload_item` in Chromium. Each
// outcome must be the one wasmtime gives natively (xtask writes those into
// OSTRICH_WORKLOAD_REFERENCE): the same output bytes, the same failure kind, the same digest
// — so replicas computed in a browser and in a native agent agree, and each way
// `broken.wat` breaks is named alike by both engines.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BASE, launchProfile, LandingPage, DevicePage, ownerCommand } from "./harness.mjs";

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

// The results line the stream must give for an item whose native outcome is `outcome`
// (docs/PROTOCOL.md, the results endpoint).
function expectedLine(item, input, outcome) {
  if ("output" in outcome) {
    const bytes = Buffer.from(outcome.output);
    const line = { item, input, output: bytes.toString("base64") };
    try { line.json = JSON.parse(bytes.toString("utf8")); } catch { /* not JSON */ }
    return line;
  }
  const { kind, message } = outcome.failed;
  return { item, input, error: { kind, message: kind === "module_error" ? message : "" } };
}

// Reads a job's results from item `from` on, answer after answer, until every item is
// written; calls `onLine` with each item line as it arrives.
async function readResults(swarmId, ownerKey, jobId, onLine) {
  let next = 0;
  for (let answers = 0; ; answers++) {
    assert.ok(answers < 500, "no end after 500 answers");
    const resp = await fetch(`${BASE}/api/swarms/${swarmId}/jobs/${jobId}/results?from=${next}`, {
      headers: { authorization: `Bearer ${ownerKey}` },
    });
    assert.equal(resp.status, 200);
    let rest = "";
    let closing = null;
    const decoder = new TextDecoder();
    for await (const chunk of resp.body) {
      rest += decoder.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop();
      for (const text of lines.filter(Boolean)) {
        const line = JSON.parse(text);
        if ("item" in line) {
          assert.equal(line.item, next, "items come in order");
          await onLine(line);
          next += 1;
        } else {
          closing = line;
        }
      }
    }
    assert.ok(closing, "every answer ends with its closing line");
    if (closing.next === closing.items) return closing;
  }
}

test("a browser and a native agent run own workloads on the swarm: results equal the native run, in order, streamed", { timeout: 300000 }, async () => {
  const jobs = REFERENCE.jobs;
  const owner = await launchProfile();
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage);
  await landing.open();
  const dashboard = await landing.createSwarm("own workloads");
  const swarmId = dashboard.swarmId();
  const ownerKey = await dashboard.ownerKey();
  const invite = await dashboard.createInvite({ uses: 2 });

  // Both devices join by invite: neither is trusted, so every lease is computed by both and
  // counts only when the browser's outputs file and the agent's are the same bytes.
  const phone = await launchProfile();
  const device = new DevicePage(await phone.context.newPage());
  await device.open(invite.link);
  await device.page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });
  const state = mkdtempSync(join(tmpdir(), "ostrich-agent-"));
  const agentOutput = [];
  const agent = spawn(process.env.OSTRICH_AGENT,
    [invite.link, "--cores", "1", "--name", "native agent", "--state", join(state, "agent.json")]);
  agent.stdout.on("data", (d) => agentOutput.push(String(d)));
  agent.stderr.on("data", (d) => agentOutput.push(String(d)));
  try {
    for (const [name, job] of Object.entries(jobs)) {
      const bytes = readFileSync(job.file);
      const sha = createHash("sha256").update(bytes).digest("hex");
      const put = await fetch(`${BASE}/api/swarms/${swarmId}/modules/${sha}`, {
        method: "PUT", headers: { authorization: `Bearer ${ownerKey}` }, body: bytes,
      });
      assert.ok([200, 201].includes(put.status), `uploading ${name}: ${put.status}`);
      const chunksBefore = Number(await device.page.getByTestId("chunks-done").textContent());
      const { job_id: jobId } = await ownerCommand(swarmId, ownerKey, {
        command: "submit_job", job: { ...job.spec, module: sha },
      });
      let runningAtFirst = null;
      const closing = await readResults(swarmId, ownerKey, jobId, async (line) => {
        if (runningAtFirst === null) {
          const status = await (await fetch(`${BASE}/api/swarms/${swarmId}/jobs/${jobId}`)).json();
          runningAtFirst = status.state === "running";
        }
        const input = job.spec.start + line.item * job.spec.step;
        assert.deepEqual(line, expectedLine(line.item, input, job.outcomes[line.item]), `${name} item ${line.item}`);
      });
      assert.equal(closing.state, "done", `${name}: ${JSON.stringify(closing)}`);
      assert.equal(closing.items, job.spec.items);
      if (name === "pi") assert.ok(runningAtFirst, "the first results came while the job ran");
      // The browser computed leases of this job (and was not quarantined for them).
      const chunks = Number(await device.page.getByTestId("chunks-done").textContent());
      assert.ok(chunks > chunksBefore, `${name}: the browser computed no lease`);
      assert.equal(await device.page.getByTestId("join-refused").count(), 0);
    }
    // An input set: 400 JSON texts in two pages, echoed by the broken module (it breaks only
    // on inputs whose first byte is below 14). Devices fetch each lease's inputs by ticket.
    const texts = Array.from({ length: 400 }, (_, i) => JSON.stringify({ n: i, word: "é".repeat(i % 7) }));
    const records = (items) => Buffer.concat(items.flatMap((t) => {
      const bytes = Buffer.from(t, "utf8");
      const length = Buffer.alloc(4);
      length.writeUInt32LE(bytes.length);
      return [length, bytes];
    }));
    const pages = [];
    for (const part of [texts.slice(0, 250), texts.slice(250)]) {
      const page = records(part);
      const sha = createHash("sha256").update(page).digest("hex");
      const put = await fetch(`${BASE}/api/swarms/${swarmId}/inputs/${sha}`, {
        method: "PUT", headers: { authorization: `Bearer ${ownerKey}` }, body: page,
      });
      assert.equal(put.status, 201);
      pages.push(await put.json());
    }
    assert.deepEqual(pages.map((p) => p.items), [250, 150]);
    const broken = createHash("sha256").update(readFileSync(jobs.broken.file)).digest("hex");
    const chunksBefore = Number(await device.page.getByTestId("chunks-done").textContent());
    const { job_id: setJob } = await ownerCommand(swarmId, ownerKey, {
      command: "submit_job",
      job: { kind: "workload", module: broken, items: 400, time_limit_ms: 1000, inputs: pages },
    });
    const closing = await readResults(swarmId, ownerKey, setJob, async (line) => {
      const text = texts[line.item];
      assert.deepEqual(line, {
        item: line.item, output: Buffer.from(text, "utf8").toString("base64"), json: JSON.parse(text),
      });
    });
    assert.equal(closing.state, "done");
    assert.ok(Number(await device.page.getByTestId("chunks-done").textContent()) > chunksBefore,
      "the browser computed leases of the input set");
    // The owner saves the whole result set from the dashboard: the same lines, one file.
    const row = ownerPage.locator(`[data-testid="job-row"][data-job-id="${setJob}"]`);
    await row.waitFor({ timeout: 10000 });
    const [download] = await Promise.all([
      ownerPage.waitForEvent("download"),
      row.getByTestId("job-results").click(),
    ]);
    assert.equal(download.suggestedFilename(), `results-${setJob.slice(0, 8)}.ndjson`);
    const saved = readFileSync(await download.path(), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(saved.length, 400);
    saved.forEach((line, i) => assert.deepEqual(line.json, JSON.parse(texts[i])));
    await row.getByTestId("job-results-status").filter({ hasText: "Saved 400 items" }).waitFor({ timeout: 5000 });
    // Each module was fetched once into Cache Storage, by its name.
    const cached = await device.page.evaluate(async () =>
      (await (await caches.open("ostrich-modules")).keys()).map((r) => new URL(r.url).pathname));
    const names = Object.values(jobs).map((job) => createHash("sha256").update(readFileSync(job.file)).digest("hex"));
    assert.deepEqual(cached.sort(), names.map((sha) => `/api/swarms/${swarmId}/modules/${sha}`).sort());
    // The endless loop ended by terminating the browser's runner: the item failed, it did not
    // stall the job, and the browser failed no lease on the way.
    assert.equal(jobs.broken.outcomes[1].failed.kind, "time_limit");
    assert.equal(await device.page.getByTestId("lease-error").count(), 0);
    assert.equal(agent.exitCode, null, `the agent is still running:\n${agentOutput.join("")}`);
  } catch (err) {
    console.log(`--- agent output ---\n${agentOutput.join("")}`);
    throw err;
  } finally {
    agent.kill();
    rmSync(state, { recursive: true, force: true });
  }
  assert.deepEqual(phone.errors, []);
});
