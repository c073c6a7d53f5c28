/**
 * The ratelimit check in a running Ferry: per rcpt / mail / conn / byte, modes, the result in the context,
 * the limit from a Redis lookup, and the Redis store (rates survive a new Ferry on the same Redis).
 */
import assert from "node:assert/strict";
import { RawClient, type TestFerry, withFerry } from "../../helpers/ferry.ts";
import { TestRedis } from "../../helpers/redis.ts";
import { ratelimit } from "../../../src/policy/checks/ratelimit.ts";
import { redisHash } from "../../../src/policy/redis_lookup.ts";
import type { PolicyMiddleware } from "../../../mod.ts";
import { runFerryCli, writeConfig } from "../../helpers/process.ts";

async function open(f: TestFerry): Promise<RawClient> {
  const c = await RawClient.connect(f.port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
  return c;
}

/** One message from a fresh connection; returns every reply code (MAIL, RCPTs, final). */
async function message(f: TestFerry, rcpts: string[], size = 10): Promise<number[]> {
  const c = await open(f);
  try {
    const codes = [(await c.cmd("MAIL FROM:<a@sender.test>"))!.code];
    if (codes[0] !== 250) return codes;
    for (const r of rcpts) codes.push((await c.cmd(`RCPT TO:<${r}>`))!.code);
    if (!codes.slice(1).includes(250)) return codes;
    assert.equal((await c.cmd("DATA"))?.code, 354);
    await c.send(`Subject: x\r\n\r\n${"y".repeat(size)}\r\n.\r\n`);
    codes.push((await c.reply())!.code);
    return codes;
  } finally {
    c.close();
  }
}

Deno.test("ratelimit: per rcpt strict defers the recipient over the limit, the rate is in the context", async () => {
  const seen: unknown[] = [];
  const spy: PolicyMiddleware<"rcpt"> = async function spy(c, next) {
    seen.push(c.get("ratelimit"));
    await next();
  };
  await withFerry({
    checks: [ratelimit({ limit: 3, period: "1h", per: "rcpt", mode: "strict" })],
    policy: { rcpt: [spy] },
  }, async (f) => {
    assert.deepEqual(
      await message(f, ["a@example.test", "b@example.test", "c@example.test", "d@example.test"]),
      [
        250,
        250,
        250,
        250,
        451,
        250,
      ],
    );
    assert.ok(f.memlog.has(/ratelimit per_rcpt: 127\.0\.0\.1 at 4\.0\/1h \(limit 3\)/));
    const last = seen.at(-1) as Record<string, { rate: number; limit: number; over: boolean; key: string }>;
    assert.equal(last.per_rcpt.key, "127.0.0.1");
    assert.equal(last.per_rcpt.over, false);
    assert.ok(Math.abs(last.per_rcpt.rate - 3) < 0.01);
  });
});

Deno.test("ratelimit: per mail reject, per conn at connect, per byte at data, readonly never counts", async () => {
  await withFerry({
    checks: [ratelimit({ limit: 2, period: "1h", per: "mail", over: "reject" })],
  }, async (f) => {
    // As in Exim, the rate of the Nth event is just under N: a limit of 2 lets two messages through.
    assert.equal((await message(f, ["a@example.test"]))[0], 250);
    assert.equal((await message(f, ["a@example.test"]))[0], 250);
    assert.equal((await message(f, ["a@example.test"]))[0], 550);
  });
  await withFerry({ checks: [ratelimit({ limit: 2, period: "1h", per: "conn" })] }, async (f) => {
    (await open(f)).close();
    (await open(f)).close();
    const c = await RawClient.connect(f.port);
    try {
      // A refusal at connect is a 421 greeting (RFC 5321 3.1), and the connection closes.
      const banner = await c.reply();
      assert.equal(banner?.code, 421);
      assert.ok(f.memlog.has(/ratelimit per_conn: 127\.0\.0\.1 at 3\.0\/1h \(limit 2\)/));
      // The log line says what the client was sent.
      assert.ok(f.memlog.has(/rejected connection: 421 4\.7\.1 Rate limit exceeded/));
    } finally {
      c.close();
    }
  });
  await withFerry(
    { checks: [ratelimit({ limit: 1000, period: "1h", per: "byte", mode: "strict" })] },
    async (f) => {
      assert.equal((await message(f, ["a@example.test"], 600)).at(-1), 250);
      assert.equal((await message(f, ["a@example.test"], 600)).at(-1), 451);
    },
  );
  await withFerry({
    checks: [ratelimit({ limit: 2, period: "1h", per: "cmd", stage: "helo", mode: "strict" })],
  }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO a.test"))?.code, 250);
      assert.equal((await c.cmd("EHLO a.test"))?.code, 250);
      assert.equal((await c.cmd("EHLO a.test"))?.code, 451);
    } finally {
      c.close();
    }
  });
  await withFerry(
    { checks: [ratelimit({ limit: 1, period: "1h", per: "rcpt", mode: "readonly" })] },
    async (f) => {
      assert.deepEqual(await message(f, ["a@example.test", "b@example.test"]), [250, 250, 250, 250]);
    },
  );
});

Deno.test("ratelimit: the limit from a Redis lookup, rates kept in Redis across Ferry restarts", async () => {
  const redis = await TestRedis.start();
  try {
    await redis.command("HSET", "limits", "127.0.0.1", "2");
    const run = (fn: (f: TestFerry) => Promise<void>) =>
      withFerry({
        redis: { servers: [{ url: redis.url }], timeout: "1s" },
        checks: [
          ratelimit({
            limit: async (c) => Number((await redisHash("limits").get(c.client.ip)) ?? 100),
            period: "1h",
            per: "mail",
            mode: "strict",
          }),
        ],
      }, fn);
    await run(async (f) => {
      assert.equal((await message(f, ["a@example.test"]))[0], 250);
    });
    // A new Ferry (another node) sees the same rate.
    await run(async (f) => {
      assert.equal((await message(f, ["a@example.test"]))[0], 250);
      assert.equal((await message(f, ["a@example.test"]))[0], 451);
      assert.match(await redis.command("EXISTS", "ferry:rl:per_mail/3600s/per_mail/127.0.0.1"), /^:1/);
      // Redis gone: the limit's lookup fails first, and the check defers with 451 4.3.0.
      await redis.stop();
      const c = await open(f);
      try {
        const r = await c.cmd("MAIL FROM:<a@sender.test>");
        assert.equal(r?.code, 451);
        assert.match(r!.text, /^4\.3\.0 /);
      } finally {
        c.close();
      }
    });
  } finally {
    await redis.cleanup();
  }
});

Deno.test("ratelimit: the Redis store down defers with 451 4.3.0, the server named in the log only", async () => {
  const redis = await TestRedis.start();
  try {
    await withFerry({
      redis: { servers: [{ url: redis.url }], timeout: "1s" },
      checks: [ratelimit({ limit: 5, period: "1h", per: "mail" })],
    }, async (f) => {
      assert.equal((await message(f, ["a@example.test"]))[0], 250);
      await redis.stop();
      const c = await open(f);
      try {
        const r = await c.cmd("MAIL FROM:<a@sender.test>");
        assert.equal(r?.code, 451);
        assert.equal(r!.text, "4.3.0 Temporary local problem, please try again later");
      } finally {
        c.close();
      }
      assert.ok(f.memlog.has(/ratelimit per_mail for 127\.0\.0\.1: redis:\/\/\S+ .*\(deferred\)/));
    });
  } finally {
    await redis.cleanup();
  }
});

Deno.test("config errors in issue 11 options stop start-up with exit 78 naming the option", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string, RegExp][] = [
      [
        `{ checks: [ratelimit({ limit: 3, period: "soon", per: "mail" })] }`,
        /ratelimit: period: expected a duration/,
      ],
      [
        `{ checks: [ratelimit({ limit: 3, period: "1h", per: "day" })] }`,
        /ratelimit: per must be conn, mail/,
      ],
      [`{ checks: [rspamd({ timeout: "later" })] }`, /rspamd: timeout: expected a duration/],
      [`{ checks: [dcc({ timeout: -1 })] }`, /dcc: timeout: expected a duration/],
      [
        `{ redis: { servers: [{ url: "localhost:6379" }] } }`,
        /redis\.servers\[0\]\.url: expected redis:\/\/host:port/,
      ],
      [`{ redis: { servers: [] } }`, /redis\.servers: at least one server/],
    ];
    for (const [i, [literal, expected]] of cases.entries()) {
      const path = await writeConfig(dir, literal, `case${i}.ts`, ["ratelimit", "rspamd", "dcc"]);
      const r = await runFerryCli(["--config", path, "--check-config"]);
      assert.equal(r.code, 78, `${literal}: ${r.stderr}`);
      assert.match(r.stderr, expected);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
