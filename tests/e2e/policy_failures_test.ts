/**
 * Policy steps that go wrong: a throw, a hang, a double next(). Each becomes 451 4.3.0 with a log line that
 * names the step, never a 5xx, and the server keeps serving.
 */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";
import type { BaseContext } from "../../src/policy/context.ts";

type Step = (c: BaseContext, next: () => Promise<void>) => Promise<void> | void;

async function mailReply(port: number, sender = "s@sender.test") {
  const c = await RawClient.connect(port);
  try {
    const banner = await c.reply();
    if (banner?.code !== 220) return { banner, mail: null };
    assert.equal((await c.cmd("EHLO fail.test"))?.code, 250);
    return { banner, mail: await c.cmd(`MAIL FROM:<${sender}>`) };
  } finally {
    c.close();
  }
}

Deno.test("a mail step that throws gives 451 4.3.0, logs the step's name, and the next connection works", async () => {
  const flaky: Step = async function flaky_db(c, next) {
    if (c.helo === "fail.test" && (c as unknown as { sender: string }).sender === "s@sender.test") {
      throw new Error("connection to db refused");
    }
    await next();
  };
  await withFerry({ policy: { mail: [flaky] } }, async (f) => {
    const { mail } = await mailReply(f.port);
    assert.equal(mail?.code, 451);
    assert.equal(mail?.text, "4.3.0 Temporary local problem, please try again later");
    assert.ok(f.memlog.has(`mail policy step "flaky_db" failed: connection to db refused`));
    // The detail stays in the log, never on the wire.
    assert.ok(!mail!.text.includes("db"));
    const again = await mailReply(f.port, "other@sender.test");
    assert.equal(again.mail?.code, 250);
  });
});

Deno.test("a connect step that throws gives 421 4.3.0 at the banner, and the next connection is served", async () => {
  let calls = 0;
  const once: Step = async function crash_once(_c, next) {
    if (calls++ === 0) throw new TypeError("undefined is not a function");
    await next();
  };
  await withFerry({ policy: { connect: [once] } }, async (f) => {
    const first = await mailReply(f.port);
    assert.equal(first.banner?.code, 421);
    assert.match(first.banner!.text, /^4\.3\.0 /);
    assert.ok(f.memlog.has(`connect policy step "crash_once" failed: undefined is not a function`));
    const second = await mailReply(f.port);
    assert.equal(second.banner?.code, 220);
    assert.equal(second.mail?.code, 250);
  });
});

Deno.test("a data step that throws gives 451 4.3.0 after the dot and nothing is spooled; the session goes on", async () => {
  const broken: Step = function broken_scanner() {
    throw new Error("scanner socket closed");
  };
  await withFerry({ policy: { data: [broken] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO fail.test");
      await c.cmd("MAIL FROM:<s@sender.test>");
      await c.cmd("RCPT TO:<r@example.test>");
      assert.equal((await c.cmd("DATA"))?.code, 354);
      const r = await c.cmd("Subject: x\r\n\r\nx\r\n.");
      assert.equal(r?.code, 451);
      assert.match(r!.text, /^4\.3\.0 /);
      assert.equal(await f.spool.count(), 0);
      assert.ok(f.memlog.has(`data policy step "broken_scanner" failed: scanner socket closed`));
      assert.equal((await c.cmd("MAIL FROM:<s@sender.test>"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("a step that never calls next nor resolves times out after policyTimeout with 451 naming the step", async () => {
  const hang: Step = function hang_forever() {
    return new Promise<void>(() => {});
  };
  await withFerry({ limits: { policyTimeout: "200ms" }, policy: { rcpt: [hang] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO fail.test");
      await c.cmd("MAIL FROM:<s@sender.test>");
      const t0 = Date.now();
      const r = await c.cmd("RCPT TO:<r@example.test>");
      const took = Date.now() - t0;
      assert.equal(r?.code, 451);
      assert.match(r!.text, /^4\.3\.0 /);
      assert.ok(took >= 180 && took < 3000, `took ${took} ms`);
      assert.ok(f.memlog.has(`rcpt policy: policy step "hang_forever" at rcpt took longer than 200 ms`));
      assert.equal((await c.cmd("NOOP"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("a step that calls next() twice is a bug reported as 451 4.3.0, not an acceptance", async () => {
  const twice: Step = async function twice(_c, next) {
    await next();
    await next();
  };
  await withFerry({ policy: { mail: [twice] } }, async (f) => {
    const { mail } = await mailReply(f.port);
    assert.equal(mail?.code, 451);
    assert.ok(f.memlog.has("next() called more than once"));
  });
});

Deno.test("a step that throws a plain object (not an Error) is still a 451, never a crash", async () => {
  const weird: Step = function weird_throw() {
    throw { reason: "nope" };
  };
  await withFerry({ policy: { helo: [weird] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      const r = await c.cmd("EHLO fail.test");
      assert.equal(r?.code, 451);
      assert.equal((await c.cmd("NOOP"))?.code, 250);
    } finally {
      c.close();
    }
  });
});
