// Accessibility: axe-core (WCAG 2.1 A and AA rules) over every page a user sees — landing,
// the owner's dashboard, a viewer's dashboard and a device page — at desktop and phone sizes,
// with a job and an invite on screen. Each page is also saved as a screenshot in
// tests/e2e/output/ (ignored), which the README's pictures come from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { BASE, REFERENCE, launchProfile, LandingPage, DevicePage, ownerCommand } from "./harness.mjs";

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const OUTPUT = new URL("./output/", import.meta.url);
const SIZES = { desktop: { width: 1366, height: 900 }, phone: { width: 390, height: 844 } };

/** axe-core's WCAG 2.1 AA violations on the page as it is, one line each; saves a screenshot. */
async function audit(page, name) {
  // Evaluated in the page: nothing is added to its document.
  await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    globalThis.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
  mkdirSync(OUTPUT, { recursive: true });
  await page.screenshot({ path: new URL(`${name}.png`, OUTPUT).pathname, fullPage: true });
  return result.violations.map((v) =>
    `${name}: ${v.id} (${v.impact}) ${v.help}: ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`);
}

test("every page passes axe-core's WCAG 2.1 AA rules on a desktop and a phone", async () => {
  const owner = await launchProfile();
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage);
  const violations = [];
  for (const [size, viewport] of Object.entries(SIZES)) {
    await ownerPage.setViewportSize(viewport);
    await landing.open();
    await ownerPage.getByTestId("swarm-name").waitFor();
    violations.push(...await audit(ownerPage, `landing-${size}`));
  }
  await ownerPage.setViewportSize(SIZES.desktop);
  const dashboard = await landing.createSwarm("Lab");
  const swarmId = dashboard.swarmId();
  const ownerKey = await dashboard.ownerKey();
  const invite = await dashboard.createInvite();
  // Feedback: the copy buttons say so, and the run state's button is the pressed one.
  await ownerPage.getByTestId("copy-code").click();
  await ownerPage.getByTestId("copied").filter({ hasText: "Code copied" }).waitFor({ timeout: 2000 });
  await ownerPage.getByTestId("run").and(ownerPage.locator('[aria-pressed="true"]')).waitFor({ timeout: 5000 });
  await ownerPage.getByTestId("pause").click();
  await ownerPage.getByTestId("pause").and(ownerPage.locator('[aria-pressed="true"]')).waitFor({ timeout: 5000 });
  assert.equal(await ownerPage.getByTestId("run").getAttribute("aria-pressed"), "false");
  await ownerPage.getByTestId("run").click();
  await ownerPage.getByTestId("run").and(ownerPage.locator('[aria-pressed="true"]')).waitFor({ timeout: 5000 });
  const phone = await launchProfile();
  const devicePage = new DevicePage(await phone.context.newPage());
  await devicePage.open(invite.link);
  await devicePage.page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });
  const own = await owner.context.newPage();
  await own.goto(`${BASE}/s/${swarmId}/device`);
  await own.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 20000 });
  await ownerCommand(swarmId, ownerKey, { command: "submit_job", job: { kind: "prime_count", lo: 0, hi: 200000000 } });
  await ownerCommand(swarmId, ownerKey, { command: "submit_job", job: { kind: "mandelbrot", ...REFERENCE.job } });
  await ownerPage.locator('[data-testid="job-row"][data-state="done"]').filter({ hasText: "Mandelbrot" }).waitFor({ timeout: 90000 });
  await ownerPage.bringToFront();
  // Finished jobs but the newest fold to a line with their times; Show unfolds one.
  const older = ownerPage.locator('[data-testid="job-row"]').filter({ hasText: "π in" });
  await older.locator(".bar").waitFor({ state: "hidden", timeout: 5000 });
  assert.match(await older.getByTestId("job-times").textContent(),
    /^submitted \d\d:\d\d:\d\d · started \d\d:\d\d:\d\d · finished \d\d:\d\d:\d\d · took \d+ s$/);
  await older.getByTestId("job-fold").click();
  await older.locator(".bar").waitFor({ state: "visible", timeout: 5000 });
  // The list shows five jobs at a time.
  for (let i = 0; i < 4; i++) {
    await ownerCommand(swarmId, ownerKey, { command: "submit_job", job: { kind: "prime_count", lo: 0, hi: 1000 + i } });
  }
  await ownerPage.getByTestId("jobs-more").filter({ hasText: "Show 1 older jobs" }).waitFor({ timeout: 30000 });
  assert.equal(await ownerPage.getByTestId("job-row").count(), 5);
  await ownerPage.getByTestId("jobs-more").click();
  await ownerPage.getByTestId("job-row").nth(5).waitFor({ timeout: 5000 });
  const viewer = await launchProfile();
  const viewerPage = await viewer.context.newPage();
  await viewerPage.goto(`${BASE}/s/${swarmId}`);
  await viewerPage.getByTestId("device-row").first().waitFor({ timeout: 10000 });
  for (const [size, viewport] of Object.entries(SIZES)) {
    for (const [name, page] of [["dashboard-owner", ownerPage], ["dashboard-viewer", viewerPage], ["device", devicePage.page]]) {
      await page.setViewportSize(viewport);
      await page.waitForTimeout(300);
      violations.push(...await audit(page, `${name}-${size}`));
    }
  }
  assert.deepEqual(violations, [], `WCAG 2.1 AA violations:\n${violations.join("\n")}`);
});
