// One browser device for `cargo xtask bench workload`: headless Chromium opens a swarm's owner
// link (so that it keeps the owner key and joins as a trusted device, whose results are not
// replicated) and then its device page, with `navigator.hardwareConcurrency` set to CORES.
// Prints "device ready" once the device has run its benchmark; closes the browser and exits
// when its standard input closes.
//
// usage: node xtask/browser-device.mjs BASE SWARM_ID OWNER_KEY CORES
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, swarmId, ownerKey, cores] = process.argv.slice(2);
const dir = mkdtempSync(join(tmpdir(), "ostrich-bench-device-"));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const close = async () => {
  await context.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
};
process.stdin.on("end", close);
process.stdin.resume();
await context.addInitScript((n) => Object.defineProperty(navigator, "hardwareConcurrency", { get: () => n }), Number(cores));
const page = await context.newPage();
page.on("pageerror", (err) => console.error(`pageerror: ${err.message}`));
await page.goto(`${base}/s/${swarmId}#owner=${ownerKey}`);
await page.getByTestId("owner-badge").waitFor({ timeout: 30000 });
await page.goto(`${base}/s/${swarmId}/device`);
await page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 60000 });
console.log("device ready");
