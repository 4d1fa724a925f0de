// Runs the kernel benchmark's WASM side in headless Chromium and prints the result as JSON on
// stdout. `cargo xtask bench` builds the module first and calls this script:
//
//   node kernels-bench/chromium.mjs <pkg dir> <reps>
//
// A static server on 127.0.0.1 (a free port) serves a blank page, worker.js and the
// wasm-bindgen output in <pkg dir>; the page starts one dedicated Web Worker, which runs every
// workload <reps> times (see worker.js). CHROMIUM_PATH overrides /usr/bin/chromium.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [pkgDir, repsArg] = process.argv.slice(2);
const reps = Number(repsArg);
if (!pkgDir || !Number.isInteger(reps) || reps < 1) {
  console.error("usage: node kernels-bench/chromium.mjs <pkg dir> <reps>");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const TYPES = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };
const PAGE = "<!doctype html><meta charset=utf-8><link rel=icon href=\"data:,\"><title>kernel benchmark</title>";

/** The file a request path names, or null: only the page, worker.js and files in pkgDir. */
function fileFor(path) {
  if (path === "/worker.js") return join(here, "worker.js");
  const name = path.startsWith("/pkg/") ? path.slice("/pkg/".length) : null;
  if (name && name === basename(name) && !name.startsWith(".")) return join(pkgDir, name);
  return null;
}

const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://127.0.0.1").pathname;
  // Cross-origin isolation gives performance.now() its fine resolution.
  const headers = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cache-control": "no-store",
  };
  try {
    if (path === "/") {
      res.writeHead(200, { ...headers, "content-type": TYPES[".html"] }).end(PAGE);
      return;
    }
    const file = fileFor(path);
    if (!file) throw new Error("not found");
    const body = await readFile(file);
    const type = TYPES[file.slice(file.lastIndexOf("."))] || "application/octet-stream";
    res.writeHead(200, { ...headers, "content-type": type }).end(body);
  } catch {
    res.writeHead(404, headers).end("not found");
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(`console: ${msg.text()}`); });
  await page.goto(`${base}/`);
  const result = await page.evaluate((reps) => new Promise((resolve, reject) => {
    const worker = new Worker("/worker.js", { type: "module" });
    worker.onmessage = (event) => { worker.terminate(); resolve(event.data); };
    worker.onerror = (event) => reject(new Error(`worker failed: ${event.message || "no message"}`));
    worker.postMessage({ reps });
  }), reps);
  if (errors.length) throw new Error(errors.join("\n"));
  const crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  console.log(JSON.stringify({ browser: `Chromium ${browser.version()}`, crossOriginIsolated, ...result }));
} finally {
  await browser.close();
  server.close();
}
