/**
 * readProxyHeader() against a real HAProxy (Debian package `haproxy`): HAProxy accepts a TCP client on a
 * loopback frontend and connects to a Deno listener with `send-proxy` / `send-proxy-v2`.
 */
import assert from "node:assert/strict";
import { PP2_TYPE, type ProxyHeader } from "../../src/inbound/proxy_protocol.ts";
import { readProxyHeader } from "../../src/inbound/proxy_reader.ts";
import { type HaproxyProcess, spawnHaproxy } from "../helpers/haproxy.ts";
import { freePort } from "../helpers/process.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What the backend listener saw on each connection HAProxy made to it. */
interface Seen {
  header?: ProxyHeader;
  error?: string;
  reason?: string;
  data: string;
}

/** A Deno listener that reads a PROXY header on every connection, then echoes "ok <bytes>" once. */
function backend(): { port: number; seen: Seen[]; changed: EventTarget; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: Seen[] = [];
  const changed = new EventTarget();
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const serve = async (conn: Deno.Conn) => {
    conns.add(conn);
    try {
      const r = await readProxyHeader(conn, { timeoutMs: 3000 });
      const entry: Seen = { header: r.header, error: r.error, reason: r.reason, data: dec.decode(r.rest) };
      seen.push(entry);
      changed.dispatchEvent(new Event("x"));
      if (!r.header) return;
      const p = new Uint8Array(256);
      while (!entry.data.endsWith("\n")) {
        const n = await r.stream.read(p);
        if (n === null) return;
        entry.data += dec.decode(p.subarray(0, n));
      }
      await conn.write(enc.encode(`ok ${entry.data}`));
      changed.dispatchEvent(new Event("x"));
    } catch {
      // HAProxy closing a health-check connection is fine.
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };
  const loop = (async () => {
    while (true) {
      try {
        tasks.push(serve(await listener.accept()));
      } catch (e) {
        // A health check that resets before accept() surfaces as NotConnected: keep listening.
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
      }
    }
  })();
  return {
    port: listener.addr.port,
    seen,
    changed,
    close: async () => {
      listener.close();
      await loop.catch(() => {});
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await Promise.allSettled(tasks);
    },
  };
}

/** Waits until `pred` holds, re-checking whenever the backend reports a change. */
function waitFor<T>(changed: EventTarget, pred: () => T | undefined, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const v = pred();
      if (v === undefined) return;
      cleanup();
      resolve(v);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const cleanup = () => {
      clearTimeout(timer);
      changed.removeEventListener("x", check);
    };
    changed.addEventListener("x", check);
    check();
  });
}

interface Run {
  /** HAProxy `server` line options after the address. */
  serverOptions: string;
  /** Frontend bind host. */
  bindHost: "127.0.0.1" | "::1";
  /** Extra lines for the frontend section. */
  frontendExtra?: string;
  /** Extra lines for the backend section. */
  backendExtra?: string;
}

/**
 * Starts HAProxy in the foreground with a frontend on a free loopback port and the given backend, connects a
 * client through it, sends one line and returns what the backend saw. Kills HAProxy on the way out.
 */
async function throughHaproxy(
  run: Run,
  body: (ctx: { be: ReturnType<typeof backend>; client: Deno.TcpConn; fePort: number }) => Promise<void>,
): Promise<void> {
  const be = backend();
  const dir = await Deno.makeTempDir({ prefix: "ferry-haproxy-" });
  let haproxy: HaproxyProcess | undefined;
  let client: Deno.TcpConn | undefined;
  try {
    for (let attempt = 0; attempt < 3 && !client; attempt++) {
      const fePort = freePort(run.bindHost);
      const hp = await spawnHaproxy(dir, [
        "frontend fe",
        `  bind ${run.bindHost === "::1" ? "[::1]" : run.bindHost}:${fePort}`,
        run.frontendExtra ?? "",
        "  default_backend be",
        "backend be",
        `  server s1 127.0.0.1:${be.port} ${run.serverOptions}`,
        run.backendExtra ?? "",
      ]);
      haproxy = hp;
      const deadline = Date.now() + 5000;
      while (!hp.exited() && Date.now() < deadline) {
        try {
          client = await Deno.connect({ hostname: run.bindHost, port: fePort });
          await body({ be, client, fePort });
          return;
        } catch (e) {
          if (!(e instanceof Deno.errors.ConnectionRefused)) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      // HAProxy failed to start (most likely the port was taken meanwhile): collect stderr and retry.
      await hp.stop();
      const err = await hp.stderr;
      haproxy = undefined;
      if (attempt === 2) throw new Error(`HAProxy did not start: ${err}`);
    }
  } finally {
    try {
      client?.close();
    } catch { /* already closed */ }
    await haproxy?.stop();
    await be.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function expectProxied(
  be: ReturnType<typeof backend>,
  client: Deno.TcpConn,
  fePort: number,
  version: 1 | 2,
): Promise<ProxyHeader> {
  const me = client.localAddr;
  const seen = await waitFor(
    be.changed,
    () => be.seen.find((s) => s.header?.command === "PROXY" && s.header.source?.port === me.port),
    15_000,
    "the proxied connection",
  );
  const h = seen.header!;
  assert.equal(h.version, version);
  assert.equal(h.family, me.hostname.includes(":") ? "TCP6" : "TCP4");
  assert.deepEqual(h.source, { ip: me.hostname, port: me.port });
  assert.deepEqual(h.destination, { ip: client.remoteAddr.hostname, port: fePort });
  // Bytes the client sends after the header reach the backend through rest + stream.
  await client.write(enc.encode("EHLO client.example\r\n"));
  const reply = new Uint8Array(64);
  const n = await client.read(reply);
  assert.equal(dec.decode(reply.subarray(0, n ?? 0)), "ok EHLO client.example\r\n");
  return h;
}

Deno.test("readProxyHeader() reads HAProxy's send-proxy (v1) header with the client's real address", async () => {
  await throughHaproxy(
    { serverOptions: "send-proxy", bindHost: "127.0.0.1" },
    async ({ be, client, fePort }) => {
      const h = await expectProxied(be, client, fePort, 1);
      assert.deepEqual(h.tlvs, []);
    },
  );
});

Deno.test("readProxyHeader() reads HAProxy's send-proxy-v2 header with CRC32C and unique-id TLVs", async () => {
  await throughHaproxy({
    serverOptions: "send-proxy-v2 proxy-v2-options crc32c,unique-id",
    bindHost: "127.0.0.1",
    frontendExtra: "  unique-id-format ferry-%ci-%cp",
  }, async ({ be, client, fePort }) => {
    const h = await expectProxied(be, client, fePort, 2);
    const types = h.tlvs.map((t) => t.type);
    assert.ok(types.includes(PP2_TYPE.CRC32C), `TLV types ${types}`);
    const uid = h.tlvs.find((t) => t.type === PP2_TYPE.UNIQUE_ID);
    assert.equal(dec.decode(uid?.value), `ferry-${client.localAddr.hostname}-${client.localAddr.port}`);
  });
});

Deno.test("readProxyHeader() reads HAProxy's send-proxy-v2 header for an IPv6 client", async () => {
  await throughHaproxy(
    { serverOptions: "send-proxy-v2", bindHost: "::1" },
    async ({ be, client, fePort }) => {
      const h = await expectProxied(be, client, fePort, 2);
      assert.equal(h.source?.ip, "::1");
    },
  );
});

Deno.test("readProxyHeader() reads HAProxy's v2 LOCAL header on a health check", async () => {
  await throughHaproxy({
    serverOptions: "send-proxy-v2 check check-send-proxy inter 100ms fall 1000",
    bindHost: "127.0.0.1",
    // A bare connect check sends nothing; a tcp-check with a send step sends the LOCAL header first.
    backendExtra: "  option tcp-check\n  tcp-check send PING\\r\\n\n  tcp-check expect string ok",
  }, async ({ be, client, fePort }) => {
    const local = await waitFor(
      be.changed,
      () => be.seen.find((s) => s.header?.command === "LOCAL"),
      15_000,
      "a LOCAL health check",
    );
    assert.equal(local.header?.version, 2);
    assert.equal(local.header?.source, undefined);
    assert.equal(local.header?.family, "UNKNOWN");
    await waitFor(be.changed, () => local.data === "PING\r\n" || undefined, 15_000, "the check's PING");
    await expectProxied(be, client, fePort, 2);
    assert.deepEqual(be.seen.filter((s) => s.error === "invalid"), [], "every header HAProxy sent parsed");
  });
});
