// What the browser tests share: the system under test, fresh browser profiles (each a separate
// device with its own localStorage) and page objects that keep selectors (data-testid) in one
// place. `cargo xtask test` starts the system with wrangler dev and passes its URL in
// OSTRICH_BASE_URL.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import jsQR from "jsqr";
import { PNG } from "pngjs";

export const BASE = process.env.OSTRICH_BASE_URL;
// { job, png }: a Mandelbrot job and the PNG the native kernels render for it (cargo xtask
// test writes it).
export const REFERENCE = JSON.parse(readFileSync(process.env.OSTRICH_MANDELBROT_REFERENCE, "utf8"));
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const profiles = [];

/** A fresh browser profile: its own localStorage, like a separate device. `init` runs in
 * every page before its scripts. */
export async function launchProfile({ init } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "ostrich-e2e-"));
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, args: ARGS });
  if (init) await context.addInitScript(init);
  const errors = [];
  const watch = (page) => {
    page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
    page.on("console", (msg) => { if (msg.type() === "error") errors.push(`console: ${msg.text()}`); });
  };
  context.on("page", watch);
  context.pages().forEach(watch);
  const profile = { context, errors, close: async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); } };
  profiles.push(profile);
  return profile;
}

export class LandingPage {
  /** `base`: where the client is served (the coordinator's origin unless a Pages origin). */
  constructor(page, base = BASE) { this.page = page; this.base = base; }
  async open() { await this.page.goto(`${this.base}/`); }
  async createSwarm(name) {
    await this.page.getByTestId("swarm-name").fill(name);
    await this.page.getByTestId("create-swarm").click();
    await this.page.waitForURL(/\/s\/[0-9a-f]{32}$/);
    const dashboard = new DashboardPage(this.page);
    await this.page.getByTestId("owner-badge").waitFor({ timeout: 10000 });
    return dashboard;
  }
  async joinWithCode(code) {
    await this.page.getByTestId("join-code").fill(code);
    await this.page.getByTestId("join-with-code").click();
  }
}

export class DashboardPage {
  constructor(page) { this.page = page; }
  swarmId() { return new URL(this.page.url()).pathname.split("/")[2]; }
  /** The owner key this browser keeps for the swarm. */
  async ownerKey() {
    return this.page.evaluate((id) => localStorage.getItem(`ostrich.owner.${id}`), this.swarmId());
  }
  rows() { return this.page.getByTestId("device-row"); }
  row(deviceId) { return this.page.locator(`[data-testid="device-row"][data-device-id="${deviceId}"]`); }
  async createInvite({ uses } = {}) {
    const shown = this.page.getByTestId("invite-link");
    const previous = (await shown.count()) ? await shown.getAttribute("href") : null;
    if (uses) await this.page.getByTestId("invite-uses").fill(String(uses));
    await this.page.getByTestId("create-invite").click();
    await this.page.waitForFunction(
      (prev) => { const a = document.querySelector('[data-testid="invite-link"]'); return a && a.getAttribute("href") !== prev; },
      previous, { timeout: 5000 });
    const id = await this.page.getByTestId("invite-created").getAttribute("data-invite-id");
    await this.inviteRow(id).waitFor({ timeout: 5000 });
    const link = await shown.getAttribute("href");
    const code = await this.page.getByTestId("invite-code").textContent();
    return { id, link, code };
  }
  inviteRow(id) { return this.page.locator(`[data-testid="invite-row"][data-invite-id="${id}"]`); }
  async revokeInvite(id) {
    await this.inviteRow(id).getByTestId("invite-revoke").click();
    await this.inviteRow(id).waitFor({ state: "detached", timeout: 5000 });
  }
  /** Screenshots the QR code and decodes it like a phone camera would. */
  async scanQr() {
    const qr = this.page.getByTestId("invite-qr");
    assert.equal(await qr.locator("svg").count(), 1, "the QR code is an inline SVG");
    const png = PNG.sync.read(await qr.screenshot());
    const found = jsQR(new Uint8ClampedArray(png.data), png.width, png.height);
    assert.ok(found, "the QR code decodes");
    return found.data;
  }
}

export class DevicePage {
  constructor(page) { this.page = page; }
  async open(url) { await this.page.goto(url); }
  async deviceId() {
    const id = this.page.getByTestId("device-id");
    await id.filter({ hasText: /^[0-9a-f]{32}$/ }).waitFor({ timeout: 15000 });
    return id.textContent();
  }
  async refusal() {
    const card = this.page.getByTestId("join-refused");
    await card.waitFor({ timeout: 10000 });
    return card.getAttribute("data-code");
  }
}

/** A canvas's pixels (RGBA), as the page drew them. */
export async function canvasPixels(canvas) {
  const dataUrl = await canvas.evaluate((el) => el.toDataURL("image/png"));
  return PNG.sync.read(Buffer.from(dataUrl.slice(dataUrl.indexOf(",") + 1), "base64")).data;
}

/** Closes every profile launched so far. */
export async function closeProfiles() {
  for (const p of profiles.splice(0)) await p.close();
}

/** Sends an owner command over HTTP with the owner key, as the API allows. */
export async function ownerCommand(swarmId, ownerKey, command) {
  const resp = await fetch(`${BASE}/api/swarms/${swarmId}/owner`, {
    method: "POST",
    headers: { authorization: `Bearer ${ownerKey}`, "content-type": "application/json" },
    body: JSON.stringify(command),
  });
  const body = await resp.json();
  assert.equal(resp.status, 200, JSON.stringify(body));
  return body;
}

before(() => assert.ok(BASE, "OSTRICH_BASE_URL must point at a running system"));
after(closeProfiles);
