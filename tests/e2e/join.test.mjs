// Browser end-to-end tests in headless Chromium (Debian's), driven by playwright-core.
// `cargo xtask test` starts the system with wrangler dev and passes its URL in
// OSTRICH_BASE_URL. Page objects keep selectors (data-testid) in one place.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.OSTRICH_BASE_URL;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** A fresh browser profile: its own localStorage, like a separate device. */
async function launchProfile() {
  const dir = mkdtempSync(join(tmpdir(), "ostrich-e2e-"));
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, args: ARGS });
  const errors = [];
  context.on("page", (page) => watch(page, errors));
  context.pages().forEach((page) => watch(page, errors));
  return { context, errors, close: async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); } };
}

function watch(page, errors) {
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(`console: ${msg.text()}`); });
}

class LandingPage {
  constructor(page) { this.page = page; }
  async open() { await this.page.goto(`${BASE}/`); }
  async createSwarm(name) {
    await this.page.getByTestId("swarm-name").fill(name);
    await this.page.getByTestId("create-swarm").click();
    await this.page.waitForURL(/\/s\/[0-9a-f]{32}$/);
    return new DashboardPage(this.page);
  }
}

class DashboardPage {
  constructor(page) { this.page = page; }
  swarmId() { return new URL(this.page.url()).pathname.split("/")[2]; }
  async joinLink() { return this.page.getByTestId("join-link").getAttribute("href"); }
  rows() { return this.page.getByTestId("device-row"); }
  row(deviceId) { return this.page.locator(`[data-testid="device-row"][data-device-id="${deviceId}"]`); }
}

class DevicePage {
  constructor(page) { this.page = page; }
  async open(url) { await this.page.goto(url); }
  async deviceId() {
    const id = this.page.getByTestId("device-id");
    await assert.doesNotReject(id.filter({ hasText: /^[0-9a-f]{32}$/ }).waitFor({ timeout: 15000 }));
    return id.textContent();
  }
}

let owner;
let device;

before(async () => {
  assert.ok(BASE, "OSTRICH_BASE_URL must point at a running system");
  owner = await launchProfile();
  device = await launchProfile();
});

after(async () => {
  await owner?.close();
  await device?.close();
});

test("a swarm created on the landing page sees a second browser join live", async () => {
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage);
  await landing.open();
  const dashboard = await landing.createSwarm("e2e swarm");
  await ownerPage.getByTestId("swarm-title").filter({ hasText: "e2e swarm" }).waitFor({ timeout: 10000 });
  await assert.doesNotReject(ownerPage.getByText("owner", { exact: true }).waitFor({ timeout: 5000 }));
  assert.equal(await dashboard.rows().count(), 0);

  const joinUrl = await dashboard.joinLink();
  assert.match(joinUrl, new RegExp(`/s/${dashboard.swarmId()}/device$`));

  const devicePage = new DevicePage(await device.context.newPage());
  await devicePage.open(joinUrl);
  const deviceId = await devicePage.deviceId();
  await devicePage.page.getByTestId("device-state").filter({ hasText: "connected" }).waitFor();

  // The dashboard learns of the device from the next 2 s snapshot.
  const row = dashboard.row(deviceId);
  await row.waitFor({ timeout: 8000 });
  assert.equal(await row.getByTestId("device-status").textContent(), "ONLINE");
  assert.equal(await ownerPage.getByTestId("online-count").textContent(), "1");

  // Closing the device's page takes it OFFLINE on the dashboard.
  await devicePage.page.close();
  await row.getByTestId("device-status").filter({ hasText: "OFFLINE" }).waitFor({ timeout: 8000 });

  // Reopening the link in the same browser resumes the same device identity.
  const again = new DevicePage(await device.context.newPage());
  await again.open(joinUrl);
  assert.equal(await again.deviceId(), deviceId);
  await row.getByTestId("device-status").filter({ hasText: "ONLINE" }).waitFor({ timeout: 8000 });
  assert.equal(await dashboard.rows().count(), 1, "no duplicate registration");

  assert.deepEqual(owner.errors, [], "no errors in the owner's pages");
  assert.deepEqual(device.errors, [], "no errors in the device's pages");
});

test("an unknown page and an unknown swarm are explained", async () => {
  const page = await owner.context.newPage();
  await page.goto(`${BASE}/nowhere`);
  await assert.doesNotReject(page.getByText("Page not found").waitFor({ timeout: 5000 }));
  await page.goto(`${BASE}/s/${"0".repeat(32)}/device`);
  await assert.doesNotReject(page.getByTestId("swarm-missing").waitFor({ timeout: 10000 }));
  await page.goto(`${BASE}/s/${"0".repeat(32)}`);
  await assert.doesNotReject(page.getByTestId("swarm-missing").waitFor({ timeout: 10000 }));
  await page.close();
});
