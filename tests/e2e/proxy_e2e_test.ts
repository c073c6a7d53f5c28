/**
 * PROXY protocol end to end (HAProxy `doc/proxy-protocol.txt`): Ferry as a child process behind a real
 * HAProxy (`send-proxy`, `send-proxy-v2`, mode tcp) with swaks as the client on 127.0.0.2; bad or missing
 * headers from a host in `proxyRequiredHosts` (banner, then 503 to everything but QUIT); and a PROXY line
 * from a host not in the list is only an unknown command.
 */

import assert from "node:assert/strict";
import { RawClient } from "../helpers/ferry.ts";
import { FerryProcess, freePort, sendMessage, sleep } from "../helpers/process.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import type { Envelope } from "../../src/core/envelope.ts";
import { spawnHaproxy } from "../helpers/haproxy.ts";

const dec = new TextDecoder();

const localPort = (c: RawClient): number => (c.conn.localAddr as Deno.NetAddr).port;

/** A running HAProxy with one frontend a backend option list, all to `target`. */
interface Haproxy {
  ports: number[];
  stop(): Promise<void>;
}

/** Starts HAProxy in the foreground: frontend i on a free 127.0.0.1 port → target with `serverOptions[i]`. */
async function startHaproxy(dir: string, target: number, serverOptions: string[]): Promise<Haproxy> {
  let lastErr = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const ports = serverOptions.map(() => freePort());
    const sections = serverOptions.flatMap((opt, i) => [
      `frontend fe${i}`,
      `  bind 127.0.0.1:${ports[i]}`,
      `  default_backend be${i}`,
      `backend be${i}`,
      `  server s${i} 127.0.0.1:${target} ${opt}`,
    ]);
    const hp = await spawnHaproxy(dir, sections);
    const exited = hp.exited;
    const stop = hp.stop;
    // Ready when every frontend accepts a TCP connection (it is closed before HAProxy connects onward).
    const deadline = Date.now() + 5000;
    let ready = 0;
    while (!exited() && Date.now() < deadline && ready < ports.length) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: ports[ready] })).close();
        ready++;
      } catch {
        await sleep(30);
      }
    }
    if (ready === ports.length && !exited()) return { ports, stop };
    await stop();
    lastErr = await hp.stderr;
  }
  throw new Error(`HAProxy did not start: ${lastErr}`);
}

/** Runs swaks from 127.0.0.2:<localPort> through `port`; returns its transcript (exit 0 required). */
async function swaks(port: number, localPort: number, msgId: string): Promise<string> {
  const out = await new Deno.Command("swaks", {
    args: [
      "--server",
      `127.0.0.1:${port}`,
      "--local-interface",
      "127.0.0.2",
      "--local-port",
      String(localPort),
      "--ehlo",
      "swaks.test",
      "--from",
      "a@sender.test",
      "--to",
      "b@example.test",
      "--data",
      `Message-Id: <${msgId}>\nSubject: through HAProxy\n\nhello via proxy\n`,
      "--timeout",
      "10",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  assert.equal(out.code, 0, `swaks failed:\n${text}`);
  return text;
}

async function readEnvelopes(spoolDir: string): Promise<Map<string, Envelope>> {
  const spool = new SqliteSpool({ dir: spoolDir, thread: "main" });
  await spool.open();
  try {
    return new Map((await spool.list()).map((e) => [e.envelope.id, e.envelope]));
  } finally {
    await spool.close();
  }
}

Deno.test("behind HAProxy send-proxy and send-proxy-v2, the log and the envelope carry the real client", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-e2e-proxy-" });
  const logFile = `${dir}/ferry.log`;
  const f = await FerryProcess.start({
    dir,
    extra: `proxyRequiredHosts: ["127.0.0.1"], proxyTimeout: "500ms", log: { file: ${
      JSON.stringify(logFile)
    } },`,
  });
  let hap: Haproxy | undefined;
  try {
    hap = await startHaproxy(dir, f.port, ["send-proxy", "send-proxy-v2"]);
    const got: { version: 1 | 2; id: string; clientPort: number; fePort: number; prxPort: number }[] = [];
    for (const version of [1, 2] as const) {
      const fePort = hap.ports[version - 1];
      const clientPort = freePort("127.0.0.2");
      const msgId = `v${version}-${crypto.randomUUID()}@client.test`;
      const transcript = await swaks(fePort, clientPort, msgId);
      const id = /<-\s+250 2\.0\.0 OK id=(\S+)/.exec(transcript)?.[1];
      assert.ok(id, `swaks got a 250 with an id:\n${transcript}`);
      const line = await f.waitFor(
        new RegExp(`^.* ${id} <= .*$`, "m"),
        15_000,
        () => Deno.readTextFile(logFile),
      );
      const m = new RegExp(
        `<= a@sender\\.test H=\\(swaks\\.test\\) \\[127\\.0\\.0\\.2\\]:${clientPort} P=esmtp S=\\d+ ` +
          `id=${msgId.replace(/\./g, "\\.")} PRX=\\[127\\.0\\.0\\.1\\]:(\\d+) for b@example\\.test$`,
      ).exec(line[0]);
      assert.ok(m, `the <= line names the real client and the proxy:\n${line[0]}`);
      const prxPort = Number(m[1]);
      assert.notEqual(prxPort, fePort, "PRX= is HAProxy's own end of the connection to Ferry");
      got.push({ version, id, clientPort, fePort, prxPort });
    }
    await hap.stop();
    hap = undefined;
    assert.equal((await f.stop()).code, 0);

    const envelopes = await readEnvelopes(f.spoolDir);
    for (const g of got) {
      const env = envelopes.get(g.id);
      assert.ok(env, `message ${g.id} is in the spool`);
      assert.equal(env.client.ip, "127.0.0.2");
      assert.equal(env.client.port, g.clientPort);
      assert.equal(env.client.helo, "swaks.test");
      assert.deepEqual(env.proxy, {
        proxyIp: "127.0.0.1",
        proxyPort: g.prxPort,
        targetIp: "127.0.0.1",
        targetPort: g.fePort,
        version: g.version,
      });
    }
  } finally {
    await hap?.stop();
    await f.cleanup();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** A v2 header (TCP4 192.0.2.1:1000 → 127.0.0.1:25) whose one TLV claims 10 value bytes and has none. */
function v2WithTlvOverrun(): Uint8Array {
  const sig = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  const addrs = [192, 0, 2, 1, 127, 0, 0, 1, 0x03, 0xe8, 0x00, 0x19];
  const tlv = [0x04, 0x00, 0x0a]; // PP2_TYPE_NOOP, length 10, no value
  const len = addrs.length + tlv.length;
  return new Uint8Array([...sig, 0x21, 0x11, len >> 8, len & 0xff, ...addrs, ...tlv]);
}

/** After a failed PROXY negotiation: banner, then 503 to EHLO and MAIL, 221 to QUIT. */
async function expectRefusedSession(c: RawClient, what: string): Promise<void> {
  const banner = await c.reply(3000);
  assert.equal(banner?.code, 220, `${what}: banner ${JSON.stringify(banner)}`);
  for (const cmd of ["EHLO client.test", "MAIL FROM:<a@sender.test>"]) {
    const r = await c.cmd(cmd);
    assert.equal(r?.code, 503, `${what}: ${cmd} → ${JSON.stringify(r)}`);
    assert.match(r!.text, /Proxy negotiation failed/);
  }
  assert.equal((await c.cmd("QUIT"))?.code, 221, `${what}: QUIT`);
  assert.ok(await c.closed(), `${what}: closed after QUIT`);
}

Deno.test("bad or missing PROXY headers from a listed host get the banner, then 503 until QUIT; serving goes on", async () => {
  const f = await FerryProcess.start({ extra: `proxyRequiredHosts: ["127.0.0.1"], proxyTimeout: "500ms",` });
  try {
    const bad: [string, Uint8Array | string][] = [
      ["garbage", "HELLO I am not a proxy\r\n"],
      ["v1 bad address", "PROXY TCP4 300.1.2.3 127.0.0.1 1234 25\r\n"],
      ["v2 TLV overrun", v2WithTlvOverrun()],
    ];
    const ports: number[] = [];
    for (const [what, header] of bad) {
      const c = await RawClient.connect(f.port);
      try {
        ports.push(localPort(c));
        await c.send(header);
        await expectRefusedSession(c, what);
      } finally {
        c.close();
      }
    }
    // No header at all: the banner waits for proxyTimeout, then the session is refused.
    const silent = await RawClient.connect(f.port);
    try {
      const t0 = Date.now();
      ports.push(localPort(silent));
      await expectRefusedSession(silent, "no header");
      assert.ok(Date.now() - t0 >= 450, `the banner came after proxyTimeout (${Date.now() - t0} ms)`);
    } finally {
      silent.close();
    }
    // The log is written asynchronously: wait for each line rather than expect it already there.
    for (const [i, p] of ports.entries()) {
      const reason = i === 3 ? "late" : "invalid";
      await f.waitFor(new RegExp(`PROXY negotiation failed from \\[127\\.0\\.0\\.1\\]:${p}: ${reason}`));
    }
    assert.doesNotMatch(f.stdout, / <= /, "nothing was accepted from the refused sessions");

    // The server keeps serving: a good v1 header, sent directly, is honoured.
    const c = await RawClient.connect(f.port);
    try {
      await c.send("PROXY TCP4 192.0.2.7 127.0.0.1 4444 25\r\n");
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO good.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      assert.equal((await c.cmd("Subject: ok\r\n\r\nok\r\n."))?.code, 250);
      await f.waitFor(
        new RegExp(
          `<= a@sender\\.test H=\\(good\\.test\\) \\[192\\.0\\.2\\.7\\]:4444 .*PRX=\\[127\\.0\\.0\\.1\\]:${
            localPort(c)
          } `,
        ),
      );
    } finally {
      c.close();
    }
    assert.equal((await f.stop()).code, 0);
  } finally {
    await f.cleanup();
  }
});

Deno.test("a PROXY line from a host not in proxyRequiredHosts is an unknown command and changes nothing", async () => {
  const f = await FerryProcess.start({ extra: `proxyRequiredHosts: ["127.0.0.9"], proxyTimeout: "500ms",` });
  try {
    // Sent before the banner, it is early talking; after the banner, an unknown command.
    const c = await RawClient.connect(f.port);
    let myPort: number;
    try {
      myPort = localPort(c);
      assert.equal((await c.reply())?.code, 220);
      const r = await c.cmd("PROXY TCP4 1.2.3.4 127.0.0.1 1111 25");
      assert.equal(r?.code, 500, JSON.stringify(r));
      assert.equal((await c.cmd("EHLO direct.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      assert.equal((await c.cmd("Subject: direct\r\n\r\nhi\r\n."))?.code, 250);
      assert.equal((await c.cmd("QUIT"))?.code, 221);
    } finally {
      c.close();
    }
    const line = (await f.waitFor(/^.* <= .*$/m))[0];
    assert.match(line, new RegExp(`H=\\(direct\\.test\\) \\[127\\.0\\.0\\.1\\]:${myPort} `));
    assert.doesNotMatch(line, /PRX=|1\.2\.3\.4/);
    // Another client, unaffected.
    const id = await sendMessage(f.port);
    assert.equal((await f.stop()).code, 0);
    const env = (await readEnvelopes(f.spoolDir)).get(id);
    assert.equal(env?.client.ip, "127.0.0.1");
    assert.equal(env?.proxy, undefined);
  } finally {
    await f.cleanup();
  }
});
