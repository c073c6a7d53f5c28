import assert from "node:assert/strict";
import { RedisService } from "../../src/policy/redis_service.ts";
import { setRedisService } from "../../src/policy/services.ts";
import { redisHash, redisKey, redisLookup, redisSet } from "../../src/policy/redis_lookup.ts";
import { SmtpError } from "../../src/core/reply.ts";
import { RawClient, withFerry } from "../helpers/ferry.ts";
import { TestRedis } from "../helpers/redis.ts";

/** Runs `fn` with a real redis-server and a RedisService bound as Ferry's. */
async function withRedis(
  fn: (redis: TestRedis, logs: string[], service: RedisService) => Promise<void>,
  timeoutMs = 500,
): Promise<void> {
  const redis = await TestRedis.start();
  const logs: string[] = [];
  const service = new RedisService({ servers: [{ url: redis.url }], timeoutMs, log: (t) => logs.push(t) });
  try {
    await service.open();
    setRedisService(service);
    await fn(redis, logs, service);
  } finally {
    setRedisService(undefined);
    await service.close();
    await redis.cleanup();
  }
}

/** Retries `fn` until it resolves (a restarted Redis is found again by reconnecting), up to 10 s. */
async function eventually<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

Deno.test("Redis lookups: set membership, hash field, plain key, lists, integer replies as booleans", async () => {
  await withRedis(async (redis) => {
    await redis.command("SADD", "blocked", "192.0.2.7");
    await redis.command("HSET", "limits", "192.0.2.7", "25");
    await redis.command("SET", "route:example.test", "quarantine");
    await redis.command("SADD", "tags", "a", "b");
    assert.equal(await redisSet("blocked").get("192.0.2.7"), true);
    assert.equal(await redisSet("blocked").get("192.0.2.8"), false);
    assert.equal(await redisHash("limits").get("192.0.2.7"), "25");
    assert.equal(await redisHash("limits").get("192.0.2.8"), null);
    assert.equal(await redisKey("route:").get("example.test"), "quarantine");
    assert.equal(await redisKey((d) => `route:${d}`).has("other.test"), false);
    assert.deepEqual((await redisLookup(() => ["SMEMBERS", "tags"]).get("x") as string[]).sort(), ["a", "b"]);
    // A map reply (RESP3) reads as a list, as RESP2 gave it: field, value, ….
    assert.deepEqual(await redisLookup(() => ["HGETALL", "limits"]).get("x"), ["192.0.2.7", "25"]);
    assert.equal(await redisLookup(() => ["INCR", "counter"]).get("x"), true);
    // A score is a string, not a flag (integers only are booleans).
    await redis.command("ZADD", "scores", "1.5", "m");
    assert.equal(await redisLookup(() => ["ZSCORE", "scores", "m"]).get("x"), "1.5");
    const hosts = redisSet("blocked").hostList();
    assert.equal(await hosts({ ip: "192.0.2.7" }), true);
    assert.equal(await hosts({ ip: "192.0.2.9" }), false);
    assert.equal(await hosts({ name: "no-ip.example" }), false);
  });
});

Deno.test("Redis lookups: a cached answer is kept for its lifetime, an uncached one follows Redis", async () => {
  await withRedis(async (redis) => {
    const cached = redisSet("allow", { cache: "1h" });
    const live = redisSet("allow");
    assert.equal(await cached.get("a"), false);
    assert.equal(await live.get("a"), false);
    await redis.command("SADD", "allow", "a");
    assert.equal(await cached.get("a"), false);
    assert.equal(await live.get("a"), true);
  });
});

Deno.test("Redis lookups: stopped Redis defers with 451 4.3.0 and a log line within the deadline, then recovers", async () => {
  await withRedis(async (redis, logs) => {
    await redis.command("SADD", "blocked", "192.0.2.7");
    const lookup = redisSet("blocked");
    assert.equal(await lookup.get("192.0.2.7"), true);
    await redis.stop();
    const started = Date.now();
    await assert.rejects(lookup.get("192.0.2.7"), (err: unknown) => {
      assert.ok(err instanceof SmtpError);
      assert.equal(err.code, 451);
      assert.equal(err.enhanced, "4.3.0");
      return true;
    });
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    assert.ok(
      logs.some((l) => l.startsWith("redis lookup SISMEMBER blocked 192.0.2.7:") && l.endsWith("(deferred)")),
      logs.join("\n"),
    );
    // failOpen: the same failure answers "not found".
    assert.equal(await redisSet("blocked", { failOpen: true }).get("192.0.2.7"), null);
    assert.ok(logs.some((l) => l.includes("failOpen")), logs.join("\n"));
    // Redis comes back empty (no persistence): the client reconnects by itself.
    await redis.start();
    await redis.command("SADD", "blocked", "192.0.2.7");
    assert.equal(await eventually(() => lookup.get("192.0.2.7")), true);
    assert.ok(logs.some((l) => l.endsWith("connected again")), logs.join("\n"));
  });
});

Deno.test("Redis lookups: a server that accepts but never answers hits the deadline", async () => {
  // A listener that never replies: the call must end at the deadline, not hang.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) held.push(c);
  })();
  const logs: string[] = [];
  const service = new RedisService({
    servers: [{ url: `redis://127.0.0.1:${port}` }],
    timeoutMs: 300,
    log: (t) => logs.push(t),
  });
  try {
    const started = Date.now();
    await service.open();
    assert.ok(Date.now() - started < 2000);
    setRedisService(service);
    const t0 = Date.now();
    await assert.rejects(redisKey("k:").get("x"), SmtpError);
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
  } finally {
    setRedisService(undefined);
    await service.close();
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
});

Deno.test("Redis lookups: a Redis set as relay.domains; Redis restarted mid-run defers RCPT, then accepts again", async () => {
  const redis = await TestRedis.start();
  try {
    await redis.command("SADD", "relay_domains", "example.test");
    await withFerry({
      redis: { servers: [{ url: redis.url }], timeout: "500ms" },
      relay: { domains: redisSet("relay_domains").hostList("name"), clients: [] },
    }, async (f) => {
      const rcpt = async (to: string) => {
        const c = await RawClient.connect(f.port);
        try {
          await c.reply();
          await c.cmd("EHLO client.test");
          await c.cmd("MAIL FROM:<a@sender.test>");
          return await c.cmd(`RCPT TO:<${to}>`);
        } finally {
          c.close();
        }
      };
      assert.equal((await rcpt("u@example.test"))?.code, 250);
      assert.equal((await rcpt("u@other.test"))?.code, 550);
      await redis.stop();
      const started = Date.now();
      const r = await rcpt("u@example.test");
      assert.equal(r?.code, 451);
      assert.match(r!.text, /^4\.3\.0 /);
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
      assert.ok(
        f.memlog.has("redis lookup SISMEMBER relay_domains example.test"),
        f.memlog.lines.map((l) => l.text).join("\n"),
      );
      await redis.start();
      await redis.command("SADD", "relay_domains", "example.test");
      const back = await eventually(async () => {
        const r = await rcpt("u@example.test");
        if (r?.code !== 250) throw new Error(`still ${r?.code}`);
        return r;
      });
      assert.equal(back.code, 250);
    });
  } finally {
    await redis.cleanup();
  }
});

Deno.test("Redis: password and database from config; a wrong password defers with a log line", async () => {
  const redis = await TestRedis.start({ password: "s3cret" });
  try {
    await redis.commandIn(3, "SADD", "blocked", "192.0.2.7");
    for (const password of ["s3cret", "wrong"]) {
      const logs: string[] = [];
      const service = new RedisService({
        servers: [{ url: redis.url, db: 3, password }],
        timeoutMs: 1000,
        log: (t) => logs.push(t),
      });
      try {
        await service.open();
        setRedisService(service);
        if (password === "s3cret") {
          assert.equal(await redisSet("blocked").get("192.0.2.7"), true);
          // Written through Ferry's client: it lands in database 3, not 0.
          await redisLookup(() => ["SADD", "written", "x"]).get("");
          assert.match(await redis.commandIn(3, "SISMEMBER", "written", "x"), /^:1/);
          assert.match(await redis.command("EXISTS", "written"), /^:0/);
        } else {
          await assert.rejects(redisSet("blocked").get("192.0.2.7"), SmtpError);
          assert.ok(logs.some((l) => /WRONGPASS|invalid password|not connected/i.test(l)), logs.join("\n"));
        }
      } finally {
        setRedisService(undefined);
        await service.close();
      }
    }
  } finally {
    await redis.cleanup();
  }
});
