// The dashboard's live Mandelbrot image: a large job fills a canvas band by band while it
// runs, from the bands endpoint, without downloading the whole PNG again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PNG } from "pngjs";
import { BASE, canvasPixels, launchProfile, LandingPage, ownerCommand } from "./harness.mjs";

test("a 2048² Mandelbrot job fills the dashboard's canvas as it runs, fetching only new bands", async () => {
  const owner = await launchProfile();
  const dashboardPage = await owner.context.newPage();
  const landing = new LandingPage(dashboardPage);
  await landing.open();
  const dashboard = await landing.createSwarm("live image");
  const swarmId = dashboard.swarmId();
  const ownerKey = await dashboard.ownerKey();

  // What the dashboard downloads: every image request, and the bands' bytes.
  const pngRequests = [];
  let bandBytes = 0;
  dashboardPage.on("request", (req) => { if (req.url().includes("image.png")) pngRequests.push(req.url()); });
  dashboardPage.on("response", async (resp) => {
    if (resp.url().includes("/bands?")) bandBytes += (await resp.body().catch(() => Buffer.alloc(0))).length;
  });

  // The owner's own browser computes (trusted: no replicas to wait for).
  const device = await owner.context.newPage();
  await device.goto(`${BASE}/s/${swarmId}/device`);
  await device.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });

  const spec = { kind: "mandelbrot", center_re: -0.7436, center_im: 0.1318, scale: 0.004, width: 2048, height: 2048, max_iter: 20000 };
  // At a 5 % throttle (one worker, a tenth of the time) the job lasts long enough to watch.
  await ownerCommand(swarmId, ownerKey, { command: "set_throttle", percent: 5 });
  const { job_id: jobId } = await ownerCommand(swarmId, ownerKey, { command: "submit_job", job: spec });
  const row = dashboardPage.locator(`[data-testid="job-row"][data-job-id="${jobId}"]`);
  const canvas = row.getByTestId("job-canvas");
  await canvas.waitFor({ timeout: 5000 });

  // Sample the rows drawn until the job is done: they grow through the job.
  const seen = [];
  for (let i = 0; i < 600 && (await row.getAttribute("data-state")) !== "done"; i++) {
    seen.push(Number(await canvas.getAttribute("data-rows-drawn")));
    await dashboardPage.waitForTimeout(500);
  }
  assert.equal(await row.getAttribute("data-state"), "done");
  await dashboardPage.waitForFunction((el) => el.getAttribute("data-rows-drawn") === "2048", await canvas.elementHandle(), { timeout: 10000 });
  const partial = [...new Set(seen.filter((rows) => rows > 0 && rows < 2048))];
  console.log(`rows drawn, sampled every 0.5 s: ${seen.join(" ")}`);
  assert.ok(partial.length >= 3, `the canvas filled in steps while the job ran: ${JSON.stringify(partial)}`);

  // The canvas shows exactly the PNG the coordinator serves.
  const served = await (await fetch(`${BASE}/api/swarms/${swarmId}/jobs/${jobId}/image.png`)).arrayBuffer();
  const png = PNG.sync.read(Buffer.from(served));
  const drawn = await canvasPixels(canvas);
  assert.equal(drawn.length, png.data.length);
  let differing = 0;
  for (let i = 0; i < drawn.length; i++) if (drawn[i] !== png.data[i]) differing++;
  assert.equal(differing, 0, "canvas and PNG agree byte for byte");

  assert.deepEqual(pngRequests, [], "the dashboard never downloaded the whole PNG");
  console.log(`bands: ${bandBytes} bytes for a ${served.byteLength}-byte PNG, ${partial.length} partial states`);
  assert.ok(bandBytes < 2 * served.byteLength, `bands took ${bandBytes} bytes, the PNG is ${served.byteLength}`);
  // The PNG link downloads under a name.
  assert.equal(await row.getByTestId("job-png").getAttribute("download"), `mandelbrot-${jobId.slice(0, 8)}.png`);
  assert.deepEqual(owner.errors.filter((e) => !e.includes("WebSocket")), [], "no errors in the pages");
});
