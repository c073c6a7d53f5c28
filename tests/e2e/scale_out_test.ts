/**
 * Scale-out as README describes it: two Ferry processes behind one HAProxy (send-proxy-v2, round robin)
 * sharing one redis-server. A per-IP rate limit holds across both nodes, and a change to a Redis set used
 * as a host list is seen by both without a restart. Clients are swaks runs from distinct loopback addresses.
 */
import assert from "node:assert/strict";
import { FerryProcess, freePort, sleep } from "../helpers/process.ts";
import { spawnHaproxy } from "../helpers/haproxy.ts";
import { TestRedis } from "../helpers/redis.ts";
import { runSwaks } from "../helpers/peers.ts";

/** One message through HAProxy from `ip`; returns the refusal's code (or 250 when stored) and the transcript. */
async function send(port: number, ip: string, to: string): Promise<{ code: number; text: string }> {
  const r = await runSwaks(port, [
    "--local-interface",
    ip,
    "--from",
    "a@sender.test",
    "--to",
    to,
    "--helo",
    "client.test",
    "--timeout",
    "20",
  ]);
  const text = r.stdout + r.stderr;
  // swaks marks a refusal `<**`; an accepted message ends with our `250 2.0.0 OK id=`.
  const refused = /^<\*\*\s+(\d{3})[ -]/m.exec(text);
  return { code: refused ? Number(refused[1]) : /^<-\s+250 2\.0\.0 OK id=/m.test(text) ? 250 : 0, text };
}

function count(node: FerryProcess, re: RegExp): number {
  return node.stdout.split("\n").filter((l) => re.test(l)).length;
}

Deno.test("scale-out: two nodes behind HAProxy share a per-IP rate limit and Redis lookups", async () => {
  const redis = await TestRedis.start();
  const dir = await Deno.makeTempDir({ prefix: "ferry-scale-" });
  const nodes: FerryProcess[] = [];
  let haproxy: Awaited<ReturnType<typeof spawnHaproxy>> | undefined;
  try {
    await redis.command("SADD", "relay_domains", "example.test");
    for (let i = 0; i < 2; i++) {
      nodes.push(
        await FerryProcess.start({
          imports: ["ratelimit", "redisSet"],
          set: {
            hostname: `"node${i + 1}.test"`,
            relay: `{ domains: redisSet("relay_domains").hostList("name"), clients: [] }`,
          },
          extra: `redis: { servers: [{ url: "${redis.url}" }], timeout: "1s" },
  proxyRequiredHosts: ["127.0.0.1"],
  proxyTimeout: "300ms",
  checks: [ratelimit({ name: "per_ip", limit: 3, period: "1h", per: "mail", mode: "strict" })],`,
        }),
      );
    }
    const fePort = freePort();
    haproxy = await spawnHaproxy(dir, [
      "frontend smtp",
      `  bind 127.0.0.1:${fePort}`,
      "  default_backend ferry",
      "backend ferry",
      "  balance roundrobin",
      ...nodes.map((n, i) => `  server node${i + 1} 127.0.0.1:${n.port} send-proxy-v2`),
    ]);
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: fePort })).close();
        break;
      } catch (err) {
        if (Date.now() > deadline || haproxy.exited()) throw new Error(`HAProxy did not start: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }

    // 1. The limit of 3 messages an hour per client address holds across the nodes.
    const limited = [];
    for (let i = 0; i < 5; i++) limited.push(await send(fePort, "127.0.0.5", "u@example.test"));
    assert.deepEqual(
      limited.map((r) => r.code),
      [250, 250, 250, 451, 451],
      limited.map((r) => r.text).join("\n"),
    );
    // Another client address is not limited by the first one's rate.
    assert.equal((await send(fePort, "127.0.0.6", "u@example.test")).code, 250);
    // Both nodes took part, and each saw the real client address from PROXY v2.
    for (const n of nodes) {
      await n.waitFor(/<= a@sender\.test .*\[127\.0\.0\.5\]/, 10_000);
    }
    // The log is written asynchronously: wait until both refusals are logged, then check there are no more.
    const refusals = () => nodes.reduce((sum, n) => sum + count(n, /ratelimit per_ip: 127\.0\.0\.5 at /), 0);
    for (const end = Date.now() + 10_000; refusals() < 2 && Date.now() < end;) await sleep(25);
    assert.equal(refusals(), 2);

    // 2. A Redis set used as relay.domains: a change is seen by both nodes at once.
    const before = [
      await send(fePort, "127.0.0.7", "u@new.test"),
      await send(fePort, "127.0.0.7", "u@new.test"),
    ];
    assert.deepEqual(before.map((r) => r.code), [550, 550]);
    // Round robin: each node refused one of them.
    for (const n of nodes) {
      await n.waitFor(
        /\[127\.0\.0\.7\].* rejected RCPT <u@new\.test> F=<a@sender\.test>: 550 5\.7\.1 Relay access denied/,
        10_000,
      );
    }
    await redis.command("SADD", "relay_domains", "new.test");
    const after = [
      await send(fePort, "127.0.0.8", "u@new.test"),
      await send(fePort, "127.0.0.8", "u@new.test"),
    ];
    assert.deepEqual(after.map((r) => r.code), [250, 250], after.map((r) => r.text).join("\n"));
    for (const n of nodes) await n.waitFor(/<= a@sender\.test .*\[127\.0\.0\.8\].* for u@new\.test/, 10_000);
  } finally {
    await haproxy?.stop();
    for (const n of nodes) await n.cleanup();
    await redis.cleanup();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
