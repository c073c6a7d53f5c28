/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core. Sign in with the token, see the
 * overview, hold and release a message through the confirmed actions and check the queue changed; the
 * screenshots must be real pages (PNG, sizeable, different from one another).
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { queueFerry } from "./_admin.ts";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

async function checkScreenshot(path: string): Promise<Uint8Array> {
  const png = await Deno.readFile(path);
  assert.deepEqual(
    [...png.subarray(0, 8)],
    [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
    `${path} is a PNG`,
  );
  // A blank 1280x800 page compresses to a few hundred octets; a page with tables and a chart does not.
  assert.ok(png.length > 8000, `${path} is only ${png.length} octets`);
  return png;
}

Deno.test("dashboard in Chromium: sign in, overview, hold and release a message with confirmation, TLS page", async () => {
  const f = await queueFerry();
  const profile = await Deno.makeTempDir({ prefix: "ferry-chromium-" });
  const shots = await Deno.makeTempDir({ prefix: "ferry-shots-" });
  // A fresh profile directory (playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  try {
    const page = await browser.newPage();
    const [id] = f.ids;

    // Without the cookie every page leads to the sign-in form; a wrong token is refused.
    await page.goto(`${f.base}/dashboard/messages`);
    assert.match(page.url(), /\/dashboard\/login$/);
    await page.fill("input[name=token]", "not-the-token-at-all");
    await page.click("button[type=submit]");
    assert.match(await page.textContent("body") ?? "", /That token is not valid/);
    await page.fill("input[name=token]", f.adminToken!);
    await page.click("button[type=submit]");
    await page.waitForURL(`${f.base}/dashboard`);

    assert.equal((await page.textContent("#count-total b"))?.trim(), "3");
    assert.equal(await page.locator("svg[aria-label='Deliveries and deferrals'] rect").count() > 10, true);
    await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

    await page.click("text=Messages");
    await page.waitForSelector(`#row-${id}`);
    assert.equal(await page.locator("#messages tbody tr").count(), 3);
    await page.screenshot({ path: `${shots}/messages.png`, fullPage: true });

    // Hold: the list's button leads to a confirmation page; only confirming changes the queue.
    await page.click(`#hold-${id}`);
    assert.match(await page.textContent("h1") ?? "", new RegExp(`Confirm: hold ${id}`));
    assert.notEqual((await f.spool.row(id))?.state, "hold", "not before confirming");
    await page.click("#confirm");
    await page.waitForURL(`${f.base}/dashboard/messages/${id}`);
    assert.equal((await page.textContent("#message-state"))?.trim(), "hold");
    assert.equal((await f.spool.row(id))?.state, "hold");
    await page.screenshot({ path: `${shots}/held.png`, fullPage: true });

    await page.goto(`${f.base}/dashboard/messages?state=hold`);
    assert.equal(await page.locator("#messages tbody tr").count(), 1);

    // Release, also confirmed.
    await page.click(`#release-${id}`);
    await page.click("#confirm");
    await page.waitForURL(`${f.base}/dashboard/messages/${id}`);
    // Released to deferred and due now: the queue manager may already have claimed it (active).
    assert.match((await page.textContent("#message-state"))?.trim() ?? "", /^(deferred|active|incoming)$/);
    assert.notEqual((await f.spool.row(id))?.state, "hold");
    assert.ok(f.memlog.has(`admin: release ${id} (dashboard)`));

    await page.goto(`${f.base}/dashboard/tls`);
    assert.match(await page.textContent("#tls") ?? "", /example\.test/);
    await page.screenshot({ path: `${shots}/tls.png`, fullPage: true });

    const pngs = await Promise.all(
      ["overview", "messages", "held", "tls"].map((n) => checkScreenshot(`${shots}/${n}.png`)),
    );
    const digests = await Promise.all(
      pngs.map(async (p) =>
        new Uint8Array(await crypto.subtle.digest("SHA-256", p as Uint8Array<ArrayBuffer>)).toHex()
      ),
    );
    assert.equal(new Set(digests).size, 4, "every screenshot shows a different page");
  } finally {
    await browser.close();
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    await Deno.remove(shots, { recursive: true }).catch(() => {});
  }
});
