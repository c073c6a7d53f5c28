import assert from "node:assert/strict";
import { compose, type Middleware } from "../../src/core/compose.ts";

type Ctx = { trace: string[] };

Deno.test("compose() runs steps in order, unwinding after next(), then final", async () => {
  const chain: Middleware<Ctx>[] = [
    async (c, next) => {
      c.trace.push("a>");
      await next();
      c.trace.push("<a");
    },
    (c, next) => {
      c.trace.push("b");
      return next();
    },
  ];
  const ctx: Ctx = { trace: [] };
  await compose(chain)(ctx, () => {
    ctx.trace.push("final");
    return Promise.resolve();
  });
  assert.deepEqual(ctx.trace, ["a>", "b", "final", "<a"]);
});

Deno.test("compose() stops when a step does not call next()", async () => {
  const ctx: Ctx = { trace: [] };
  let finalRan = false;
  await compose<Ctx>([
    (c) => {
      c.trace.push("gate");
    },
    (c, next) => {
      c.trace.push("never");
      return next();
    },
  ])(ctx, () => {
    finalRan = true;
    return Promise.resolve();
  });
  assert.deepEqual(ctx.trace, ["gate"]);
  assert.equal(finalRan, false);
});

Deno.test("compose() with an empty chain runs final, or nothing", async () => {
  let ran = 0;
  await compose<Ctx>([])({ trace: [] }, () => {
    ran++;
    return Promise.resolve();
  });
  await compose<Ctx>([])({ trace: [] });
  assert.equal(ran, 1);
});

Deno.test("compose() rejects when a step calls next() twice", async () => {
  const run = compose<Ctx>([
    async (_c, next) => {
      await next();
      await next();
    },
    (c) => {
      c.trace.push("second");
    },
  ]);
  const ctx: Ctx = { trace: [] };
  await assert.rejects(() => run(ctx), /next\(\) called more than once/);
  assert.deepEqual(ctx.trace, ["second"]);
  // The last step calling next() twice (past the end of the chain) is caught too.
  await assert.rejects(
    () =>
      compose<Ctx>([async (_c, next) => {
        await next();
        await next();
      }])({ trace: [] }),
    /more than once/,
  );
});

Deno.test("compose() propagates errors from sync throws, async rejections and final", async () => {
  const boom = new Error("boom");
  await assert.rejects(
    () =>
      compose<Ctx>([() => {
        throw boom;
      }])({ trace: [] }),
    (e) => e === boom,
  );
  await assert.rejects(
    () => compose<Ctx>([(_c, next) => next(), () => Promise.reject(boom)])({ trace: [] }),
    (e) => e === boom,
  );
  await assert.rejects(
    () => compose<Ctx>([(_c, next) => next()])({ trace: [] }, () => Promise.reject(boom)),
    (e) => e === boom,
  );
});

Deno.test("compose() lets an earlier step catch a later step's error", async () => {
  const ctx: Ctx = { trace: [] };
  await compose<Ctx>([
    async (c, next) => {
      try {
        await next();
      } catch (e) {
        c.trace.push(`caught ${(e as Error).message}`);
      }
    },
    () => {
      throw new Error("inner");
    },
  ])(ctx);
  assert.deepEqual(ctx.trace, ["caught inner"]);
});

Deno.test("compose() keeps separate state per run of the same chain", async () => {
  const run = compose<Ctx>([async (c, next) => {
    c.trace.push("x");
    await next();
  }]);
  const a: Ctx = { trace: [] }, b: Ctx = { trace: [] };
  await Promise.all([run(a), run(b)]);
  assert.deepEqual(a.trace, ["x"]);
  assert.deepEqual(b.trace, ["x"]);
});
