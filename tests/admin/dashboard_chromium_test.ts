/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core. Sign in with the token, see the
 * overview, hold and release a message through the confirmed actions and check the queue changed; bounce one
 * (it leaves the queue and its failure report is queued, found through the dashboard's link) and delete one
 * (no report); the screenshots must be real pages (PNG, sizeable, different from one another).
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

Deno.test("dashboard in Chromium: sign in, overview, hold, release, bounce and delete with confirmation, TLS page", async () => {
  const f = await queueFerry();
  const profile = await Deno.makeTempDir({ prefix: "ferry-chromium-" });
  // FERRY_SCREENSHOTS=DIR keeps the screenshots there for a person to look at.
  const keep = Deno.env.get("FERRY_SCREENSHOTS");
  const shots = keep ?? await Deno.makeTempDir({ prefix: "ferry-shots-" });
  // A fresh profile directory (playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  try {
    const page = await browser.newPage();
    const [id, toBounce, toDelete] = f.ids;

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

    // Bounce, confirmed with a reason: the message leaves the queue and its failure report is queued.
    await page.goto(`${f.base}/dashboard/messages`);
    await page.click(`#bounce-${toBounce}`);
    assert.match(await page.textContent("h1") ?? "", new RegExp(`Confirm: bounce ${toBounce}`));
    assert.ok(await f.spool.row(toBounce), "not before confirming");
    await page.fill("input[name=reason]", "spam run");
    await page.click("#confirm");
    await page.waitForURL(/\/dashboard\/messages\?done=bounce/);
    assert.match(
      await page.textContent("#notice") ?? "",
      new RegExp(`Bounced ${toBounce}; failure report \\S+`),
    );
    assert.equal(await page.locator(`#row-${toBounce}`).count(), 0, "no longer listed");
    assert.equal(await f.spool.row(toBounce), undefined, "left the queue");
    assert.ok(f.memlog.has(`admin: bounce ${toBounce} (dashboard) (spam run)`));
    const report = (await page.textContent("#report-link"))!.trim();
    // The report is listed as a message from the null sender back to carol.
    const reportRow = await page.textContent(`#row-${report}`) ?? "";
    assert.match(reportRow, /<>/);
    assert.match(reportRow, /carol@c\.test/);
    await page.screenshot({ path: `${shots}/bounced.png`, fullPage: true });
    await page.click("#report-link");
    await page.waitForURL(`${f.base}/dashboard/messages/${report}`);
    assert.match(await page.textContent("body") ?? "", /carol@c\.test/);
    const stored = await f.spool.get(report);
    assert.deepEqual([stored?.sender, stored?.delivery?.reportFor], ["", toBounce]);
    const text = new TextDecoder().decode(await f.spool.readData(report));
    assert.match(text, /Status: 5\.0\.0/);
    assert.match(text, /bounced by the administrator/);
    assert.match(text, /Subject: to dave@example\.test/);

    // Delete, confirmed: gone without a report.
    await page.goto(`${f.base}/dashboard/messages/${toDelete}`);
    await page.click(`#delete-${toDelete}`);
    assert.match(await page.textContent("h1") ?? "", new RegExp(`Confirm: delete ${toDelete}`));
    await page.click("#confirm");
    await page.waitForURL(/\/dashboard\/messages\?done=delete/);
    assert.match(
      await page.textContent("#notice") ?? "",
      new RegExp(`Deleted ${toDelete}; no report was sent`),
    );
    assert.equal(await page.locator(`#row-${toDelete}`).count(), 0);
    assert.equal(await f.spool.get(toDelete), undefined);
    assert.equal((await f.spool.query({ sender: "" })).length, 1, "only the bounce's report");

    await page.goto(`${f.base}/dashboard/tls`);
    assert.match(await page.textContent("#tls") ?? "", /example\.test/);
    await page.screenshot({ path: `${shots}/tls.png`, fullPage: true });

    const pngs = await Promise.all(
      ["overview", "messages", "held", "bounced", "tls"].map((n) => checkScreenshot(`${shots}/${n}.png`)),
    );
    const digests = await Promise.all(
      pngs.map(async (p) =>
        new Uint8Array(await crypto.subtle.digest("SHA-256", p as Uint8Array<ArrayBuffer>)).toHex()
      ),
    );
    assert.equal(new Set(digests).size, 5, "every screenshot shows a different page");
  } finally {
    await browser.close();
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    if (!keep) await Deno.remove(shots, { recursive: true }).catch(() => {});
  }
});
