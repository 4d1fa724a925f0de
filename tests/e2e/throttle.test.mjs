// The swarm throttle, measured: one browser device's throughput at 100, 50 and 10 % falls in
// proportion. The device claims 2 cores on any machine, so that the expected shares are the
// same everywhere: 2 workers, then 1, then 1 busy a fifth of the time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, launchProfile, LandingPage, ownerCommand } from "./harness.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function doneUnits(swarmId, jobId) {
  const resp = await fetch(`${BASE}/api/swarms/${swarmId}/jobs/${jobId}`);
  assert.equal(resp.status, 200);
  return (await resp.json()).done_units;
}

/**
 * The job's rate over `ms`, in units per second, as the coordinator counts accepted results:
 * the units between the first and the last moment its count changed, over the time between
 * them (results arrive in whole chunks, so the edges of the window would otherwise decide).
 */
async function measuredRate(swarmId, jobId, ms) {
  const steps = [];
  let last = await doneUnits(swarmId, jobId);
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await sleep(200);
    const now = await doneUnits(swarmId, jobId);
    if (now !== last) steps.push([Date.now(), now]);
    last = now;
  }
  assert.ok(steps.length >= 4, `only ${steps.length} results in ${ms} ms`);
  const [[t0, u0], [t1, u1]] = [steps[0], steps[steps.length - 1]];
  return { rate: ((u1 - u0) * 1000) / (t1 - t0), results: steps.length };
}

test("the swarm throttle slows a device down in proportion, and its page says how much it computes", async () => {
  const owner = await launchProfile({
    init: () => Object.defineProperty(navigator, "hardwareConcurrency", { get: () => 2 }),
  });
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage);
  await landing.open();
  const dashboard = await landing.createSwarm("throttle");
  const swarmId = dashboard.swarmId();
  const ownerKey = await dashboard.ownerKey();
  assert.match(ownerKey, /^[A-Za-z0-9_-]{43}$/);

  // The owner's own browser as the device: trusted, so no result waits for a replica.
  const device = await owner.context.newPage();
  await device.goto(`${BASE}/s/${swarmId}/device`);
  const share = device.getByTestId("device-share");
  await share.filter({ hasText: "2 workers, all the time — 2 of 2 lent cores at a 100 % throttle" }).waitFor({ timeout: 15000 });
  await device.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });

  const { job_id: jobId } = await ownerCommand(swarmId, ownerKey, {
    command: "submit_job", job: { kind: "prime_count", lo: 0, hi: 1e13 },
  });

  // The dashboard's devices table follows every tick, not only status changes.
  const doneCell = ownerPage.getByTestId("device-done").first();
  await doneCell.filter({ hasNotText: /^0$/ }).waitFor({ timeout: 15000 });
  const before = await doneCell.textContent();
  await ownerPage.waitForTimeout(4500);
  assert.notEqual(await doneCell.textContent(), before, "chunks done on the dashboard moved within two ticks");

  // The throughput chart draws that work, and moves.
  const chart = ownerPage.locator('[data-testid="chart"][data-kind="Count primes"]');
  await chart.waitFor({ timeout: 10000 });
  const line = async () => chart.locator("polyline").getAttribute("points");
  const drawn = await line();
  assert.ok(drawn.split(" ").length >= 2, `a line: ${drawn}`);
  assert.match(await chart.getByTestId("chart-now").textContent(), /numbers\/s · [0-9]+\.[0-9] chunks\/s$/, "units and chunks per second of the kind");
  await ownerPage.waitForTimeout(2500);
  assert.notEqual(await line(), drawn, "the chart moved with the next snapshot");
  assert.ok(await ownerPage.locator('[data-testid="device-row"] svg.spark polyline').count() >= 1, "a speed sparkline per device");

  const rates = {};
  for (const [percent, text, settleMs, measureMs] of [
    [100, "2 workers, all the time — 2 of 2 lent cores at a 100 % throttle", 10000, 20000],
    [50, "1 worker, all the time — 1 of 2 lent cores at a 50 % throttle", 12000, 20000],
    [10, "1 worker, 20 % of the time — 0.2 of 2 lent cores at a 10 % throttle", 20000, 35000],
  ]) {
    await ownerCommand(swarmId, ownerKey, { command: "set_throttle", percent });
    await share.filter({ hasText: text }).waitFor({ timeout: 5000 });
    // Leases already out finish at the old pace, and the coordinator's measured rate follows.
    await sleep(settleMs);
    rates[percent] = await measuredRate(swarmId, jobId, measureMs);
  }
  const at50 = rates[50].rate / rates[100].rate;
  const at10 = rates[10].rate / rates[100].rate;
  console.log(`throughput: 100 % ${rates[100].rate.toFixed(0)}/s (${rates[100].results} results), ` +
    `50 % ${rates[50].rate.toFixed(0)}/s = ${at50.toFixed(3)} (${rates[50].results}), ` +
    `10 % ${rates[10].rate.toFixed(0)}/s = ${at10.toFixed(3)} (${rates[10].results})`);
  // Two workers on a loaded 2-core machine do less than twice one worker's work, so half the
  // throttle may keep more than half the throughput; it must still fall well below it.
  assert.ok(at50 > 0.35 && at50 < 0.75, `at 50 % the device did ${at50.toFixed(3)} of its full throughput`);
  assert.ok(at10 > 0.04 && at10 < 0.2, `at 10 % the device did ${at10.toFixed(3)} of its full throughput`);

  // At 0 % it computes nothing, and its page says why.
  await ownerCommand(swarmId, ownerKey, { command: "set_throttle", percent: 0 });
  await device.getByTestId("device-notice").filter({ hasText: "throttle is at 0 %" }).waitFor({ timeout: 5000 });
  await ownerCommand(swarmId, ownerKey, { command: "set_run_state", state: "paused" });
  await device.getByTestId("device-notice").filter({ hasText: "The swarm is paused" }).waitFor({ timeout: 5000 });
  await ownerCommand(swarmId, ownerKey, { command: "cancel_job", job_id: jobId });
  assert.deepEqual(owner.errors.filter((e) => !e.includes("WebSocket")), [], "no errors in the pages");
});
