// The client deployed as Cloudflare Pages would serve it: `pages/` from a second origin (a
// plain static server on another port, unknown paths falling back to index.html) with an
// `ostrich-config.json` naming the coordinator. Every URL the client builds must reach the
// coordinator through CORS and the Origin allowlist, not the page's own origin.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { PNG } from "pngjs";
import { BASE, REFERENCE, canvasPixels, launchProfile, LandingPage, DevicePage } from "./harness.mjs";

const PORT = Number(process.env.OSTRICH_PAGES_PORT);
const PAGES = `http://127.0.0.1:${PORT}`;
const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css",
  ".wasm": "application/wasm", ".json": "application/json", ".svg": "image/svg+xml",
};

/** Serves `pages/` like a static host: files as they are, anything else as index.html. */
function servePages(coordinator) {
  const root = new URL("../../pages/", import.meta.url);
  const server = http.createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, PAGES).pathname);
    if (path === "/ostrich-config.json") {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ coordinator }));
    }
    const file = path === "/" || path.includes("..") ? "index.html" : path.slice(1);
    let body;
    let type = TYPES[extname(file)] ?? "application/octet-stream";
    try {
      body = await readFile(new URL(file, root));
    } catch {
      body = await readFile(new URL("index.html", root));
      type = TYPES[".html"];
    }
    res.writeHead(200, { "content-type": type });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(PORT, "127.0.0.1", () => resolve(server)));
}

let server;
after(() => server?.close());

test("served from a second origin, the client creates, invites, joins, computes and links to the coordinator", async () => {
  assert.ok(PORT, "OSTRICH_PAGES_PORT names the port the coordinator allows");
  server = await servePages(BASE);
  const owner = await launchProfile();
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage, PAGES);
  await landing.open();
  const dashboard = await landing.createSwarm("pages swarm");
  assert.ok(ownerPage.url().startsWith(`${PAGES}/s/`), "the dashboard stays on the Pages origin");
  const swarmId = dashboard.swarmId();
  await ownerPage.getByTestId("online-count").waitFor();

  // The invite points at the Pages origin; a second browser joins through it.
  const invite = await dashboard.createInvite();
  assert.ok(invite.link.startsWith(`${PAGES}/join/${swarmId}#t=`), invite.link);
  const phone = await launchProfile();
  const phonePage = new DevicePage(await phone.context.newPage());
  await phonePage.open(invite.link);
  const phoneId = await phonePage.deviceId();
  await dashboard.row(phoneId).getByTestId("device-status").filter({ hasText: "ONLINE" }).waitFor({ timeout: 10000 });
  // The owner's own browser computes too, so that the invited device's results are verified.
  const ownDevice = await owner.context.newPage();
  await ownDevice.goto(`${PAGES}/s/${swarmId}/device`);
  await ownDevice.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });
  await phonePage.page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });

  // A Mandelbrot job from the dashboard form: the canvas fills from the coordinator's bands.
  const image = REFERENCE.job;
  await ownerPage.getByTestId("job-kind").selectOption("mandelbrot");
  for (const field of ["width", "height", "max_iter", "center_re", "center_im", "scale"]) {
    await ownerPage.getByTestId(`job-${field.replace("_", "-")}`).fill(String(image[field]));
  }
  await ownerPage.getByTestId("submit-job").click();
  const row = ownerPage.locator('[data-testid="job-row"][data-state="done"]');
  await row.waitFor({ timeout: 90000 });
  const canvas = row.getByTestId("job-canvas");
  await ownerPage.waitForFunction(([el, rows]) => el.getAttribute("data-rows-drawn") === String(rows), [await canvas.elementHandle(), image.height]);

  // The JSON and PNG links go to the coordinator, and answer there.
  const jobId = await row.getAttribute("data-job-id");
  const jsonLink = await row.getByRole("link", { name: "JSON" }).getAttribute("href");
  assert.equal(jsonLink, `${BASE}/api/swarms/${swarmId}/jobs/${jobId}`);
  const job = await (await fetch(jsonLink)).json();
  assert.equal(job.state, "done");
  const pngLink = await row.getByTestId("job-png").getAttribute("href");
  assert.equal(pngLink, `${BASE}/api/swarms/${swarmId}/jobs/${jobId}/image.png`);
  const served = Buffer.from(await (await fetch(pngLink)).arrayBuffer());
  assert.ok((await canvasPixels(canvas)).equals(PNG.sync.read(served).data), "the canvas shows the served PNG");
  // The browser itself may read the coordinator's answers from this origin (CORS).
  const fromPage = await ownerPage.evaluate(async (url) => (await fetch(url)).status, jsonLink);
  assert.equal(fromPage, 200);

  // An origin the coordinator does not list is refused, and says so.
  const refused = await fetch(`${BASE}/api/swarms/${swarmId}`, { headers: { origin: "http://127.0.0.1:1" } });
  assert.equal(refused.status, 403);
  assert.deepEqual(owner.errors.filter((e) => !e.includes("WebSocket")), [], "no errors in the owner's pages");
  assert.deepEqual(phone.errors.filter((e) => !e.includes("WebSocket")), [], "no errors in the device's page");
});
