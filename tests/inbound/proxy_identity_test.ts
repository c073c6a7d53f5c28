/**
 * What a connection from a PROXY-protocol host is, as policy and host lists see it: a LOCAL (v2) or UNKNOWN
 * (v1) header gives no client address — never the proxy's own, which may be trusted to relay — so only the
 * banner and QUIT work; `c.server` stays Ferry's own socket address and the header's destination is
 * `c.proxy.targetIp`/`targetPort`; `c.proxyFailed` tells policy that a required negotiation failed.
 * Real HAProxy sends LOCAL for health checks and, for clients on a unix-socket frontend, v1 UNKNOWN / v2 LOCAL.
 */

import assert from "node:assert/strict";
import type { FerryConfig } from "../../mod.ts";
import type { ConnectContext } from "../../src/policy/context.ts";
import { RawClient, startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { spawnHaproxy } from "../helpers/haproxy.ts";
import { waitFor } from "../helpers/downstream.ts";

const V2_SIG = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/** A v2 LOCAL header (what HAProxy health checks send), no addresses. */
const V2_LOCAL = new Uint8Array([...V2_SIG, 0x20, 0x00, 0x00, 0x00]);

/** The proxy (127.0.0.1) is trusted to relay: exactly what must not leak to an address-less connection. */
const trustingProxy: FerryConfig = {
  proxyRequiredHosts: ["127.0.0.1"],
  proxyTimeout: "2s",
  relay: { domains: ["example.test"], clients: ["127.0.0.1"] },
};

async function withProxied(extra: FerryConfig, fn: (f: TestFerry) => Promise<void>): Promise<void> {
  const f = await startTestFerry({ ...trustingProxy, ...extra });
  try {
    await fn(f);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
}

/** Banner, then 503 5.7.0 to every command that could need an identity, then 221 to QUIT. */
async function expectNoIdentity(c: RawClient, what: string, bannerSeen = false): Promise<void> {
  if (!bannerSeen) assert.equal((await c.reply())?.code, 220, `${what}: banner`);
  for (const cmd of ["EHLO hc.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<x@elsewhere.test>", "NOOP"]) {
    const r = await c.cmd(cmd);
    assert.equal(r?.code, 503, `${what}: ${cmd} → ${JSON.stringify(r)}`);
    assert.match(r!.text, /^5\.7\.0 Command refused, the PROXY header carried no client address$/);
  }
  assert.equal((await c.cmd("QUIT"))?.code, 221, `${what}: QUIT`);
  assert.ok(await c.closed(), `${what}: closed after QUIT`);
}

Deno.test("a PROXY v2 LOCAL or v1 UNKNOWN header gives no identity: banner and QUIT only, no policy stage runs", async () => {
  const stages: string[] = [];
  await withProxied({
    policy: {
      connect: [async (c: ConnectContext, next: () => Promise<void>) => {
        stages.push(`connect ${c.client.ip}`);
        await next();
      }],
    },
  }, async (f) => {
    for (const [what, header] of [["v2 LOCAL", V2_LOCAL], ["v1 UNKNOWN", "PROXY UNKNOWN\r\n"]] as const) {
      const c = await RawClient.connect(f.port);
      try {
        await c.send(header);
        await expectNoIdentity(c, what);
      } finally {
        c.close();
      }
      const kind = what.split(" ")[1];
      await waitFor(
        () => f.memlog.has(`PROXY ${kind} connection via [127.0.0.1]`),
        15_000,
        `${what} log line`,
      );
    }
    assert.ok(
      f.memlog.has(/^PROXY LOCAL connection via \[127\.0\.0\.1\]:\d+ \(no client address\) closed: QUIT$/),
      f.memlog.lines.map((l) => l.text).join("\n"),
    );
    assert.deepEqual(stages, [], "no policy stage saw the proxy's address as the client");
    assert.ok(!f.memlog.has(" <= "));
  });
});

Deno.test("behind HAProxy on a unix-socket frontend (v1 UNKNOWN, v2 LOCAL) a client cannot relay as the proxy", async () => {
  await withProxied({}, async (f) => {
    const dir = await Deno.makeTempDir({ prefix: "ferry-haproxy-unix-" });
    const hp = await spawnHaproxy(dir, [
      "frontend f1",
      `  bind unix@${dir}/v1.sock`,
      "  default_backend b1",
      "frontend f2",
      `  bind unix@${dir}/v2.sock`,
      "  default_backend b2",
      "backend b1",
      `  server s1 127.0.0.1:${f.port} send-proxy`,
      "backend b2",
      `  server s2 127.0.0.1:${f.port} send-proxy-v2`,
    ]);
    try {
      for (const v of ["v1", "v2"]) {
        const path = `${dir}/${v}.sock`;
        let conn: Deno.Conn | undefined;
        const deadline = Date.now() + 5000;
        while (!conn) {
          try {
            conn = await Deno.connect({ transport: "unix", path });
          } catch (err) {
            if (hp.exited() || Date.now() > deadline) {
              throw new Error(`HAProxy not ready: ${err}; ${await hp.stderr}`);
            }
            await new Promise((r) => setTimeout(r, 30));
          }
        }
        const c = new RawClient(conn);
        try {
          await expectNoIdentity(c, `HAProxy ${v}`);
        } finally {
          c.close();
        }
        const kind = v === "v1" ? "UNKNOWN" : "LOCAL";
        await waitFor(
          () => f.memlog.has(`PROXY ${kind} connection via [127.0.0.1]`),
          15_000,
          `${v} log line`,
        );
      }
      assert.ok(!f.memlog.has(" <= "));
    } finally {
      await hp.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  });
});

/** Reads HAProxy's `show stat` CSV over its stats socket; returns the row of `backend/server`. */
async function serverStat(sock: string, backend: string, server: string): Promise<Record<string, string>> {
  const conn = await Deno.connect({ transport: "unix", path: sock });
  try {
    await conn.write(new TextEncoder().encode("show stat\n"));
    const text = await new Response(conn.readable).text(); // HAProxy closes after answering
    const [head, ...rows] = text.trim().split("\n");
    const cols = head.replace(/^# /, "").split(",");
    for (const row of rows) {
      const cells = row.split(",");
      if (cells[0] === backend && cells[1] === server) {
        return Object.fromEntries(cols.map((c, i) => [c, cells[i]]));
      }
    }
    throw new Error(`no row for ${backend}/${server}`);
  } finally {
    try {
      conn.close();
    } catch { /* closed by reading to the end */ }
  }
}

Deno.test("HAProxy's send-proxy-v2 health check (LOCAL) gets the banner, 503 to EHLO and 221 to QUIT: check passes", async () => {
  await withProxied({}, async (f) => {
    const dir = await Deno.makeTempDir({ prefix: "ferry-haproxy-check-" });
    const sock = `${dir}/stats.sock`;
    const hp = await spawnHaproxy(dir, [
      "global",
      `  stats socket ${sock}`,
      "backend be",
      "  option tcp-check",
      "  tcp-check expect rstring ^220\\ ",
      "  tcp-check send EHLO\\ check.test\\r\\n",
      "  tcp-check expect rstring ^503\\ 5\\.7\\.0",
      "  tcp-check send QUIT\\r\\n",
      "  tcp-check expect rstring ^221",
      `  server s1 127.0.0.1:${f.port} send-proxy-v2 check check-send-proxy inter 200ms rise 1 fall 1`,
    ]);
    try {
      let status = "";
      await waitFor(
        async () => {
          if (hp.exited()) throw new Error(`HAProxy exited: ${await hp.stderr}`);
          try {
            // "* L7OK": a leading "* " marks a check in progress; INI: none finished yet.
            status = (await serverStat(sock, "be", "s1")).check_status.replace(/^\* /, "");
          } catch {
            return false; // not listening yet
          }
          return status !== "" && status !== "INI";
        },
        8000,
        "a finished health check",
      );
      assert.equal(status, "L7OK", `HAProxy's check status of Ferry`);
      assert.ok(f.memlog.has(/^PROXY LOCAL connection via \[127\.0\.0\.1\]:\d+ .* closed: QUIT$/));
    } finally {
      await hp.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  });
});

Deno.test("behind a proxy c.server keeps Ferry's own address; the header's destination is c.proxy.targetIp/targetPort", async () => {
  const seen: { server: unknown; proxy: unknown; client: unknown; proxyFailed: boolean }[] = [];
  await withProxied({
    policy: {
      connect: [async (c: ConnectContext, next: () => Promise<void>) => {
        seen.push({ server: c.server, proxy: c.proxy, client: c.client, proxyFailed: c.proxyFailed });
        await next();
      }],
    },
  }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      const me = (c.conn.localAddr as Deno.NetAddr).port;
      await c.send("PROXY TCP4 192.0.2.7 198.51.100.25 4444 2525\r\n");
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("QUIT"))?.code, 221);
      assert.equal(seen.length, 1);
      assert.deepEqual(seen[0].server, { ip: "127.0.0.1", port: f.port });
      assert.deepEqual(seen[0].proxy, {
        proxyIp: "127.0.0.1",
        proxyPort: me,
        targetIp: "198.51.100.25",
        targetPort: 2525,
        version: 1,
      });
      assert.deepEqual({ ...(seen[0].client as object) }, {
        ip: "192.0.2.7",
        port: 4444,
        name: undefined,
        helo: undefined,
      });
      assert.equal(seen[0].proxyFailed, false);
    } finally {
      c.close();
    }
  });
});

Deno.test("c.proxyFailed tells the connect stage that a required PROXY negotiation failed; policy may drop", async () => {
  const seen: boolean[] = [];
  await withProxied({
    proxyTimeout: "300ms",
    policy: {
      connect: [async (c: ConnectContext, next: () => Promise<void>) => {
        seen.push(c.proxyFailed);
        if (c.proxyFailed) c.drop("No PROXY header", 421, "4.7.0");
        await next();
      }],
    },
  }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.send("HELLO I am not a proxy\r\n");
      const r = await c.reply();
      assert.equal(r?.code, 421, JSON.stringify(r));
      assert.match(r!.text, /No PROXY header/);
      assert.ok(await c.closed());
    } finally {
      c.close();
    }
    assert.deepEqual(seen, [true]);
  });
});
