import assert from "node:assert/strict";
import type { Middleware } from "../../src/core/compose.ts";
import { SmtpError } from "../../src/core/reply.ts";
import { verdicts } from "../../src/policy/context.ts";
import { runStage } from "../../src/policy/run_stage.ts";

type Ctx = ReturnType<typeof verdicts> & { trace: string[] };

const ctx = (): Ctx => ({ ...verdicts(), trace: [] });

async function run(chain: Middleware<Ctx>[], c = ctx(), timeoutMs = 1000, final?: () => Promise<void>) {
  const logs: string[] = [];
  try {
    await runStage("rcpt", chain, c, { timeoutMs, log: (t) => logs.push(t), final });
    return { logs, c };
  } catch (err) {
    return { logs, c, err };
  }
}

function is451(err: unknown): SmtpError {
  assert.ok(err instanceof SmtpError, `expected SmtpError, got ${err}`);
  assert.equal(err.code, 451);
  assert.equal(err.enhanced, "4.3.0");
  return err;
}

Deno.test("runStage() resolves when every step calls next(), running final last", async () => {
  const r = await run(
    [
      async function first(c, next) {
        c.trace.push("first");
        await next();
      },
      async function second(c, next) {
        c.trace.push("second");
        await next();
      },
    ],
    ctx(),
    1000,
    () => Promise.resolve(),
  );
  assert.equal(r.err, undefined);
  assert.deepEqual(r.c.trace, ["first", "second"]);
  assert.deepEqual(r.logs, []);
});

Deno.test("runStage() with an empty chain and no final does nothing", async () => {
  const r = await run([]);
  assert.equal(r.err, undefined);
});

Deno.test("runStage() turns a step that throws into 451 4.3.0 and a log line naming the step", async () => {
  const r = await run([
    async (_c, next) => await next(),
    function lookup_sender() {
      throw new Error("redis unreachable");
    },
  ]);
  const e = is451(r.err);
  assert.doesNotMatch(e.message, /redis/);
  assert.equal(r.logs.length, 1);
  assert.match(r.logs[0], /rcpt/);
  assert.match(r.logs[0], /"lookup_sender"/);
  assert.match(r.logs[0], /redis unreachable/);
});

Deno.test("runStage() names the failing step even when an earlier step awaits next()", async () => {
  const r = await run([
    async function outer(_c, next) {
      await next();
    },
    async function inner() {
      await Promise.resolve();
      throw new RangeError("bad");
    },
  ]);
  is451(r.err);
  assert.match(r.logs[0], /"inner"/);
});

Deno.test("runStage() turns a step that never calls next() nor resolves into 451 after the timeout", async () => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const started = Date.now();
  const r = await run(
    [
      async function fine(_c, next) {
        await next();
      },
      function hangs_forever() {
        // Never settles within the test (the timer is cleared below so the test leaks nothing).
        return new Promise<void>((resolve) => (timer = setTimeout(resolve, 60_000)));
      },
    ],
    ctx(),
    80,
  );
  clearTimeout(timer);
  const elapsed = Date.now() - started;
  is451(r.err);
  assert.ok(elapsed >= 70 && elapsed < 2000, `took ${elapsed} ms`);
  assert.equal(r.logs.length, 1);
  assert.match(r.logs[0], /"hangs_forever"/);
  assert.match(r.logs[0], /80 ms/);
});

Deno.test("runStage() names an anonymous step that hangs as anonymous", async () => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const chain: Middleware<Ctx>[] = [
    () => new Promise<void>((resolve) => (timer = setTimeout(resolve, 60_000))),
  ];
  Object.defineProperty(chain[0], "name", { value: "" });
  const r = await run(chain, ctx(), 30);
  clearTimeout(timer);
  is451(r.err);
  assert.match(r.logs[0], /"anonymous"/);
});

Deno.test("runStage() passes reject, defer and drop verdicts through unchanged", async () => {
  const reject = await run([function deny(c) {
    c.reject();
  }]);
  assert.ok(reject.err instanceof SmtpError);
  assert.deepEqual([reject.err.code, reject.err.enhanced, reject.err.close], [550, "5.7.1", false]);
  assert.deepEqual(reject.logs, []);

  const custom = await run([(c) => c.reject("No such user", 550, "5.1.1")]);
  assert.ok(custom.err instanceof SmtpError);
  assert.deepEqual([custom.err.code, custom.err.enhanced, custom.err.message], [
    550,
    "5.1.1",
    "No such user",
  ]);

  const defer = await run([(c) => c.defer()]);
  assert.ok(defer.err instanceof SmtpError);
  assert.deepEqual([defer.err.code, defer.err.enhanced, defer.err.temporary], [451, "4.7.1", true]);

  const drop = await run([(c) => c.drop()]);
  assert.ok(drop.err instanceof SmtpError);
  assert.deepEqual([drop.err.code, drop.err.enhanced, drop.err.close], [421, "4.7.0", true]);
});

Deno.test("runStage() stops the chain at a verdict: later steps do not run", async () => {
  const c = ctx();
  const r = await run([
    async (c, next) => {
      c.trace.push("before");
      await next();
      c.trace.push("never after");
    },
    (c) => c.reject(),
    (c) => {
      c.trace.push("never");
    },
  ], c);
  assert.ok(r.err instanceof SmtpError);
  assert.deepEqual(c.trace, ["before"]);
});

Deno.test("runStage() logs the cause of an SmtpError that carries one", async () => {
  const r = await run([() => {
    throw new SmtpError(451, "4.4.3", "Try later", { cause: new Error("DNS SERVFAIL for x.test") });
  }]);
  assert.ok(r.err instanceof SmtpError);
  assert.equal(r.err.enhanced, "4.4.3");
  assert.match(r.logs[0], /DNS SERVFAIL/);
});

Deno.test("runStage() reports a step calling next() twice as 451", async () => {
  const r = await run([
    async function twice(_c, next) {
      await next();
      await next();
    },
  ]);
  is451(r.err);
  assert.match(r.logs[0], /more than once/);
});

Deno.test("runStage() a step that does not call next() accepts without running final", async () => {
  let finalRan = false;
  const r = await run([function accept_now() {}], ctx(), 1000, () => {
    finalRan = true;
    return Promise.resolve();
  });
  assert.equal(r.err, undefined);
  assert.equal(finalRan, false);
});

Deno.test("runStage() aborts the context's signal when the deadline passes, so a slow step can stop", async () => {
  const abort = new AbortController();
  let sawAbort = false;
  const slow = async function slow_lookup(c: { signal: AbortSignal }) {
    await new Promise<void>((resolve) => c.signal.addEventListener("abort", () => resolve()));
    sawAbort = c.signal.aborted;
  };
  const logs: string[] = [];
  await assert.rejects(
    runStage("rcpt", [slow], { signal: abort.signal }, { timeoutMs: 50, log: (t) => logs.push(t), abort }),
    (e: unknown) => e instanceof SmtpError && e.code === 451,
  );
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(sawAbort, true);
  assert.match(String(abort.signal.reason), /slow_lookup/);
});
