// Browser end-to-end tests in headless Chromium (Debian's), driven by playwright-core: joining
// by QR code, link and short code, jobs computed in Web Workers, refusals explained.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PNG } from "pngjs";
import { BASE, REFERENCE, canvasPixels, launchProfile, LandingPage, DevicePage } from "./harness.mjs";

test("an invite's QR code brings a second browser into the swarm, live", async () => {
  const owner = await launchProfile();
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage);
  await landing.open();
  const dashboard = await landing.createSwarm("e2e swarm");
  await ownerPage.getByTestId("swarm-title").filter({ hasText: "e2e swarm" }).waitFor();
  assert.equal(await dashboard.rows().count(), 0);

  const invite = await dashboard.createInvite();
  assert.match(invite.link, new RegExp(`/join/${dashboard.swarmId()}#t=[A-Za-z0-9_-]{43}$`));
  assert.match(invite.code, /^[0-9A-Z]{5}-[0-9A-Z]{5}$/);
  assert.equal(await dashboard.scanQr(), invite.link, "the QR code encodes the invite link");

  const phone = await launchProfile();
  const devicePage = new DevicePage(await phone.context.newPage());
  await devicePage.open(invite.link);
  const deviceId = await devicePage.deviceId();
  await devicePage.page.getByTestId("device-state").filter({ hasText: "connected" }).waitFor();
  assert.equal(new URL(devicePage.page.url()).pathname, `/s/${dashboard.swarmId()}/device`, "the token left the address bar");
  assert.equal(new URL(devicePage.page.url()).hash, "");

  // The dashboard learns of the device from the next 2 s snapshot.
  const row = dashboard.row(deviceId);
  await row.waitFor({ timeout: 8000 });
  assert.equal(await row.getByTestId("device-status").textContent(), "ONLINE");
  assert.equal(await ownerPage.getByTestId("online-count").textContent(), "1");

  // Closing the device's page takes it OFFLINE; reopening resumes the same identity.
  await devicePage.page.close();
  await row.getByTestId("device-status").filter({ hasText: "OFFLINE" }).waitFor({ timeout: 8000 });
  const again = new DevicePage(await phone.context.newPage());
  await again.open(`${BASE}/s/${dashboard.swarmId()}/device`);
  assert.equal(await again.deviceId(), deviceId);
  await row.getByTestId("device-status").filter({ hasText: "ONLINE" }).waitFor({ timeout: 8000 });
  assert.equal(await dashboard.rows().count(), 1, "no duplicate registration");

  // The device benchmarked itself when it connected; the dashboard shows its score.
  await again.page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 15000 });
  await row.getByTestId("device-score").filter({ hasText: "×" }).waitFor({ timeout: 8000 });

  // The owner renames the device; a name that breaks the rule is refused in words.
  await row.getByTestId("device-rename").click();
  await row.getByTestId("device-rename-input").fill("   ");
  await row.getByTestId("device-rename-save").click();
  assert.equal(await row.getByTestId("device-rename-error").textContent(), "A device name must not be blank.");
  await row.getByTestId("device-rename-input").fill("Phone on the shelf");
  await row.getByTestId("device-rename-save").click();
  await row.getByTestId("device-name").filter({ hasText: "Phone on the shelf" }).waitFor({ timeout: 8000 });
  await ownerPage.getByTestId("log").filter({ hasText: "renamed to 'Phone on the shelf'" }).waitFor({ timeout: 8000 });

  // A second invited browser joins: devices that joined by invite are not trusted, so each
  // one's results are computed again by the other before they count.
  const laptop = await launchProfile();
  let laptopPage = new DevicePage(await laptop.context.newPage());
  await laptopPage.open(invite.link);
  await laptopPage.page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 15000 });

  // A job submitted from the dashboard is computed by the devices' Web Workers; its result
  // shows on the dashboard and at the JSON endpoint.
  await ownerPage.getByTestId("job-lo").fill("0");
  await ownerPage.getByTestId("job-hi").fill("100000000");
  await ownerPage.getByTestId("submit-job").click();
  await ownerPage.getByTestId("job-submitted").filter({ hasText: /^Job [0-9a-f]{8} submitted/ }).waitFor({ timeout: 5000 });
  const done = ownerPage.locator('[data-testid="job-row"][data-state="done"]');
  await done.waitFor({ timeout: 60000 });
  assert.equal(await done.getByTestId("job-result").textContent(), "5,761,455 primes", "π(10^8) computed in the browser");
  const jobId = await done.getAttribute("data-job-id");
  const job = await (await fetch(`${BASE}/api/swarms/${dashboard.swarmId()}/jobs/${jobId}`)).json();
  assert.deepEqual(job.result, { kind: "prime_count", count: 5761455 });
  assert.ok(Number(await again.page.getByTestId("chunks-done").textContent()) > 0);

  // A Mandelbrot image from the dashboard form: the browser device renders its bands, the
  // dashboard shows the picture, and the PNG is byte for byte the native render.
  const image = REFERENCE.job;
  await ownerPage.getByTestId("job-kind").selectOption("mandelbrot");
  for (const field of ["width", "height", "max_iter", "center_re", "center_im", "scale"]) {
    await ownerPage.getByTestId(`job-${field.replace("_", "-")}`).fill(String(image[field]));
  }
  await ownerPage.getByTestId("submit-job").click();
  const picture = ownerPage.locator('[data-testid="job-row"][data-state="done"]').filter({ hasText: "Mandelbrot" });
  await picture.waitFor({ timeout: 60000 });
  const shown = picture.getByTestId("job-canvas");
  await ownerPage.waitForFunction(([el, rows]) => el.getAttribute("data-rows-drawn") === String(rows), [await shown.elementHandle(), image.height]);
  const pictureId = await picture.getAttribute("data-job-id");
  const served = Buffer.from(await (await fetch(`${BASE}/api/swarms/${dashboard.swarmId()}/jobs/${pictureId}/image.png`)).arrayBuffer());
  assert.ok(served.equals(readFileSync(REFERENCE.png)), "the swarm's PNG equals the native render");
  assert.ok((await canvasPixels(shown)).equals(PNG.sync.read(served).data), "the dashboard's canvas shows the native render");
  await ownerPage.getByTestId("job-kind").selectOption("prime_count");

  // Pausing on the device page stops its work (the laptop is closed meanwhile); resuming
  // finishes the next job, once the laptop is back to verify it.
  await laptopPage.page.close();
  await again.page.getByTestId("pause-device").click();
  await again.page.getByTestId("pause-device").filter({ hasText: "Resume" }).waitFor();
  await ownerPage.getByTestId("job-hi").fill("20000000");
  await ownerPage.getByTestId("submit-job").click();
  const second = ownerPage.locator('[data-testid="job-row"]').first();
  await second.waitFor();
  await ownerPage.waitForTimeout(3000);
  assert.equal(await second.getAttribute("data-state"), "running");
  assert.match(await second.getByTestId("job-result").textContent(), /^0\.0 % · 0 primes so far$/, "a paused device computes nothing");
  await again.page.getByTestId("pause-device").click();
  laptopPage = new DevicePage(await laptop.context.newPage());
  await laptopPage.open(`${BASE}/s/${dashboard.swarmId()}/device`);
  await ownerPage.locator('[data-testid="job-row"][data-state="done"]').filter({ hasText: "1,270,607 primes" }).waitFor({ timeout: 60000 });

  // The owner removes the device: its page says so and it cannot come back.
  await row.getByTestId("device-remove").click();
  assert.equal(await again.refusal(), "bad_credential");
  await row.waitFor({ state: "detached", timeout: 8000 });

  assert.deepEqual(owner.errors, [], "no errors in the owner's pages");
  assert.deepEqual(phone.errors.filter((e) => !e.includes("WebSocket")), [], "no errors in the device's pages");
  assert.deepEqual(laptop.errors.filter((e) => !e.includes("WebSocket")), [], "no errors in the laptop's pages");
});

test("a short code typed on the start page joins; used-up and revoked invites are explained", async () => {
  const owner = await launchProfile();
  const ownerPage = await owner.context.newPage();
  const dashboard = await (async () => { const l = new LandingPage(ownerPage); await l.open(); return l.createSwarm("codes"); })();
  // A mistyped use limit is refused with a sentence, never taken as "unlimited".
  const invitesBefore = await ownerPage.getByTestId("invite-row").count();
  await ownerPage.getByTestId("invite-uses").fill("1O");
  await ownerPage.getByTestId("create-invite").click();
  const refusal = await ownerPage.getByTestId("invite-error").textContent({ timeout: 5000 });
  assert.match(refusal, /whole number/);
  assert.equal(await ownerPage.getByTestId("invite-row").count(), invitesBefore, "no invite was created");
  const single = await dashboard.createInvite({ uses: 1 });

  const laptop = await launchProfile();
  const landing = new LandingPage(await laptop.context.newPage());
  await landing.open();
  await landing.joinWithCode(single.code.toLowerCase().replace("-", " "));
  const device = new DevicePage(landing.page);
  const deviceId = await device.deviceId();
  await dashboard.row(deviceId).waitFor({ timeout: 8000 });
  // Its one use taken, the invite leaves the live list and its QR code leaves the page.
  await dashboard.inviteRow(single.id).waitFor({ state: "detached", timeout: 8000 });
  await ownerPage.getByTestId("invite-created").waitFor({ state: "detached", timeout: 2000 });

  const late = await launchProfile();
  const latePage = new DevicePage(await late.context.newPage());
  await latePage.open(single.link);
  assert.equal(await latePage.refusal(), "invite_exhausted");
  // Refusals are sentences, never the protocol's codes.
  const exhausted = await latePage.page.getByTestId("join-refused").textContent();
  assert.match(exhausted, /used up: ask the owner for a new one\./);
  assert.doesNotMatch(exhausted, /_/);

  const revoked = await dashboard.createInvite();
  await dashboard.revokeInvite(revoked.id);
  const other = new DevicePage(await late.context.newPage());
  await other.open(revoked.link);
  assert.equal(await other.refusal(), "invite_revoked");

  const bad = new LandingPage(await late.context.newPage());
  await bad.open();
  await bad.joinWithCode("ZZZZZ-ZZZZZ");
  await bad.page.getByTestId("code-error").waitFor({ timeout: 5000 });
  assert.equal(await bad.page.getByTestId("code-error").textContent(), "No invite has this code or link: check it for typos.");
});

test("without an invite a browser is told to get one; unknown pages and swarms are explained", async () => {
  const stranger = await launchProfile();
  const page = await stranger.context.newPage();
  const created = await (await fetch(`${BASE}/api/swarms`, { method: "POST", body: JSON.stringify({ name: "closed" }) })).json();
  await page.goto(`${BASE}/s/${created.swarm_id}/device`);
  await page.getByTestId("needs-invite").waitFor({ timeout: 5000 });
  await page.goto(`${BASE}/nowhere`);
  await page.getByText("Page not found").waitFor({ timeout: 5000 });
  await page.goto(`${BASE}/s/${"0".repeat(32)}/device`);
  await page.getByTestId("needs-invite").waitFor({ timeout: 5000 });
  await page.goto(`${BASE}/s/${"0".repeat(32)}`);
  await page.getByTestId("swarm-missing").waitFor({ timeout: 10000 });
});

test("an owner link opens the owner's dashboard on another device", async () => {
  const owner = await launchProfile();
  const ownerPage = await owner.context.newPage();
  const landing = new LandingPage(ownerPage);
  await landing.open();
  const dashboard = await landing.createSwarm("portable");
  const key = await dashboard.ownerKey();
  const tablet = await launchProfile();
  const tabletPage = await tablet.context.newPage();
  await tabletPage.goto(`${BASE}/s/${dashboard.swarmId()}#owner=${key}`);
  await tabletPage.getByTestId("owner-badge").waitFor({ timeout: 10000 });
  assert.equal(new URL(tabletPage.url()).hash, "", "the key left the address bar");
  await tabletPage.getByTestId("pause").click();
  await ownerPage.getByTestId("run-state").filter({ hasText: "paused" }).waitFor({ timeout: 8000 });
});

test("each page loads only its own bundle; a device page logs no errors through joining, pausing, resuming, going offline, reloading and removal", async () => {
  // Which wasm each profile fetched: a page loads only its own bundle, its workers only the kernels.
  // The dashboard's parts loaded after first paint (`split_<part>_<hash>.wasm`) count apart.
  const fetched = (profile) => {
    const names = new Set();
    profile.context.on("request", (request) => {
      const path = new URL(request.url()).pathname;
      const name = path.match(/^\/pkg\/(\w+)_bg\.wasm$/)?.[1];
      const part = path.match(/^\/pkg\/split_([a-z_]+)_\d+\.wasm$/)?.[1];
      if (name) names.add(name);
      if (part) names.add(`part ${part}`);
    });
    return names;
  };
  const owner = await launchProfile();
  const ownerWasm = fetched(owner);
  const landing = new LandingPage(await owner.context.newPage());
  await landing.open();
  const dashboard = await landing.createSwarm("quiet");
  const invite = await dashboard.createInvite();
  const phone = await launchProfile();
  const phoneWasm = fetched(phone);
  const device = new DevicePage(await phone.context.newPage());
  await device.open(invite.link);
  const deviceId = await device.deviceId();
  await device.page.getByTestId("bench-score").filter({ hasText: "reference core" }).waitFor({ timeout: 15000 });
  assert.deepEqual([...phoneWasm].sort(), ["client_compute", "client_device"], "the device page and its workers");
  assert.deepEqual(
    [...ownerWasm].sort(),
    ["client_dashboard", "part jobs", "part owner_panel", "part velocity"],
    "the landing page and the dashboard, whose parts load after it",
  );
  const pause = device.page.getByTestId("pause-device");
  await pause.click();
  await pause.filter({ hasText: "Resume" }).waitFor();
  await pause.click();
  await pause.filter({ hasText: "Pause" }).waitFor();
  await phone.context.setOffline(true);
  await device.page.waitForTimeout(3000);
  await phone.context.setOffline(false);
  await device.page.reload();
  await device.page.getByTestId("device-state").filter({ hasText: "connected" }).waitFor({ timeout: 15000 });
  await dashboard.row(deviceId).getByTestId("device-remove").click();
  assert.equal(await device.refusal(), "bad_credential");
  await device.page.waitForTimeout(2000);
  assert.deepEqual(phone.errors, [], "no errors on the device page");
  assert.deepEqual(owner.errors, [], "no errors on the dashboard");
});
