/** Connection-level limits over the wire: timeouts, the early-talker check, connection counts. */

import assert from "node:assert/strict";
import { RawClient, startTestFerry, withFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { waitFor } from "../helpers/downstream.ts";
import { runPython } from "../helpers/peers.ts";
import type { LogFields } from "../../src/core/log.ts";

Deno.test("commandTimeout: an idle client gets 421 4.4.2 and is disconnected", async () => {
  await withFerry({ limits: { commandTimeout: "300ms" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO slow.test"))?.code, 250);
      const t0 = Date.now();
      const r = await c.reply(3000);
      assert.equal(r?.code, 421);
      assert.match(r!.text, /^4\.4\.2 /);
      assert.ok(Date.now() - t0 >= 250, `timed out after ${Date.now() - t0} ms`);
      assert.ok(await c.closed());
      assert.ok(f.memlog.has("timeout waiting for command"));
    } finally {
      c.close();
    }
  });
});

Deno.test("commandTimeout: a client that sends half a command and stalls is also timed out", async () => {
  await withFerry({ limits: { commandTimeout: "300ms" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.send("EHLO half");
      const r = await c.reply(3000);
      assert.equal(r?.code, 421);
      assert.ok(await c.closed());
    } finally {
      c.close();
    }
  });
});

Deno.test("dataTimeout: a client that stalls inside DATA gets 421 4.4.2 and nothing is spooled", async () => {
  await withFerry({ limits: { dataTimeout: "300ms" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO slow.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      await c.send("Subject: stalled\r\n\r\nhalf a message\r\n");
      const r = await c.reply(3000);
      assert.equal(r?.code, 421);
      assert.match(r!.text, /^4\.4\.2 /);
      assert.ok(await c.closed());
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});

/**
 * Sends `text` one octet every `everyMs` ms while waiting for a reply; returns the reply (null: closed) and
 * how long after the first octet it came. Gives up (reply undefined) when `text` runs out.
 */
async function dribble(
  c: RawClient,
  text: string,
  everyMs: number,
): Promise<{ reply?: { code: number; text: string } | null; elapsed: number; sent: number }> {
  const t0 = Date.now();
  let got: { reply: { code: number; text: string } | null } | undefined;
  const pending = c.reply(60_000).then((reply) => (got = { reply }), () => (got = { reply: null }));
  let sent = 0;
  for (const ch of text) {
    if (got) break;
    try {
      await c.send(ch);
    } catch {
      break; // the server closed: the reply (if any) is already buffered
    }
    sent++;
    await Promise.race([pending, new Promise((r) => setTimeout(r, everyMs))]);
  }
  if (!got && sent === text.length) return { elapsed: Date.now() - t0, sent };
  await pending;
  return { reply: got!.reply, elapsed: Date.now() - t0, sent };
}

Deno.test("commandTimeout is a deadline for the whole line: a client dribbling one octet every 100 ms gets 421 4.4.2", async () => {
  await withFerry({ limits: { commandTimeout: "1s" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO slow.test"))?.code, 250);
      // 80 octets at 10 a second last 8 s; an idle timer restarted on each read would never fire.
      const d = await dribble(c, "NOOP " + "x".repeat(75), 100);
      assert.ok(d.reply, `no reply after ${d.sent} octets in ${d.elapsed} ms`);
      assert.equal(d.reply.code, 421);
      assert.match(d.reply.text, /^4\.4\.2 /);
      assert.ok(d.elapsed >= 800, `timed out after ${d.elapsed} ms`);
      assert.ok(d.elapsed < 4000, `timed out only after ${d.elapsed} ms`);
      assert.ok(await c.closed());
      assert.ok(f.memlog.has("timeout waiting for command"));
    } finally {
      c.close();
    }
  });
});

Deno.test("dataTimeout is a deadline for the whole message: a client dribbling content gets 421 4.4.2", async () => {
  await withFerry({ limits: { dataTimeout: "1s" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO slow.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      // Whole lines, each well within the deadline, but the message never ends.
      const d = await dribble(c, "Subject: slow\r\n\r\n" + "line\r\n".repeat(15), 100);
      assert.ok(d.reply, `no reply after ${d.sent} octets in ${d.elapsed} ms`);
      assert.equal(d.reply.code, 421);
      assert.match(d.reply.text, /^4\.4\.2 /);
      assert.ok(d.elapsed >= 800 && d.elapsed < 4000, `timed out after ${d.elapsed} ms`);
      assert.ok(await c.closed());
      assert.equal(await f.spool.count(), 0);
      assert.ok(f.memlog.has("timeout waiting for data"));
    } finally {
      c.close();
    }
  });
});

Deno.test("dataTimeout covers all BDAT chunks of a message: small chunks kept coming get 421 4.4.2", async () => {
  await withFerry({ limits: { dataTimeout: "1s" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO slow.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      const t0 = Date.now();
      let last: { code: number; text: string } | null = null;
      for (let i = 0; i < 80; i++) {
        await c.send("BDAT 1\r\nx");
        last = await c.reply();
        if (last?.code !== 250) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const elapsed = Date.now() - t0;
      assert.equal(last?.code, 421, `last reply ${JSON.stringify(last)} after ${elapsed} ms`);
      assert.match(last!.text, /^4\.4\.2 /);
      assert.ok(elapsed >= 800 && elapsed < 4000, `timed out after ${elapsed} ms`);
      assert.ok(await c.closed());
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});

/** A Python client that opens a transaction, starts the content and then resets the connection (RST). */
const RESET_MID_DATA = `
import socket, ssl, struct, sys
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
if len(sys.argv) > 3:  # SMTPS: the same conversation inside TLS, then a TCP reset
    ctx = ssl.create_default_context(cafile=sys.argv[3])
    s = ctx.wrap_socket(s, server_hostname="ferry.test")
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if not line: raise SystemExit("closed")
        if line[3:4] != b"-": return line
def cmd(text, code):
    s.sendall(text.encode() + b"\\r\\n")
    r = reply()
    if not r.startswith(code): raise SystemExit("unexpected reply to %s: %r" % (text, r))
reply()
cmd("EHLO reset.test", b"250")
cmd("MAIL FROM:<a@sender.test>", b"250")
cmd("RCPT TO:<b@example.test>", b"250")
if mode == "DATA":
    cmd("DATA", b"354")
    s.sendall(b"Subject: half\\r\\n\\r\\nsome of the body\\r\\n")
else:
    s.sendall(b"BDAT 1000\\r\\nSubject: half\\r\\n\\r\\nsome of the chunk")
# SO_LINGER with a zero timeout: close() sends RST instead of FIN.
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print("reset sent")
`;

for (const mode of ["DATA", "BDAT"]) {
  Deno.test(`a client that resets the connection in the middle of ${mode} is logged as a plain close, not an internal error`, async () => {
    await withFerry({}, async (f) => {
      const r = await runPython(RESET_MID_DATA, [String(f.port), mode]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /reset sent/);
      // The positive signal: the session's end is logged.
      const isClosed = (l: { fields: LogFields }) => l.fields.event === "closed";
      await waitFor(() => f.memlog.lines.some(isClosed), 15_000, "the close line");
      const closed = f.memlog.lines.find(isClosed)!;
      assert.match(closed.text, new RegExp(`closed: connection lost during ${mode}`), closed.text);
      const noise = f.memlog.lines.filter((l) =>
        /internal error|protocol error|connection error/i.test(l.text)
      );
      assert.deepEqual(noise.map((l) => l.text), []);
      assert.equal(await f.spool.count(), 0);
    });
  });
}

Deno.test("a client that resets an SMTPS connection in the middle of DATA is logged as a plain close", async () => {
  const pki = await createPki();
  try {
    const cert = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
    const f = await startTestFerry({
      listen: [{ address: "127.0.0.1", port: 0, mode: "smtps" }],
      tls: ferryTls(cert),
    });
    try {
      const r = await runPython(RESET_MID_DATA, [String(f.port), "DATA", pki.certFile]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const isClosed = (l: { fields: LogFields }) => l.fields.event === "closed";
      await waitFor(() => f.memlog.lines.some(isClosed), 15_000, "the close line");
      assert.match(f.memlog.lines.find(isClosed)!.text, /closed: connection lost during DATA/);
      const noise = f.memlog.lines.filter((l) =>
        /internal error|protocol error|connection error/i.test(l.text)
      );
      assert.deepEqual(noise.map((l) => l.text), []);
      assert.equal(await f.spool.count(), 0);
    } finally {
      await f.stop();
      await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    }
  } finally {
    await pki.cleanup();
  }
});

/** A Python client that pipelines NOOPs for up to 15 s and never reads a reply (a tiny receive buffer). */
const NEVER_READS = `
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
f.readline()
s.sendall(b"EHLO deaf.test\\r\\n")
while f.readline()[3:4] == b"-": pass
s.settimeout(0.5)
chunk = b"NOOP\\r\\n" * 10000
t0 = time.time()
while time.time() - t0 < 15:
    try:
        s.send(chunk)
    except socket.timeout:
        continue
    except OSError as e:
        print("closed after %.1f s: %s" % (time.time() - t0, e))
        break
else:
    print("still open after 15 s")
`;

Deno.test("commandTimeout also bounds writing replies: a client that pipelines and never reads is disconnected", async () => {
  await withFerry({ limits: { commandTimeout: "1s" } }, async (f) => {
    const r = await runPython(NEVER_READS, [String(f.port)], { timeoutMs: 30_000 });
    const m = /closed after ([\d.]+) s/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    // Well before the 15 s the client keeps trying: Ferry first answers NOOPs until its send buffer is full,
    // which a loaded machine has taken 6.9 s to do (the bound was 6 s), then waits the 1 s commandTimeout.
    assert.ok(Number(m[1]) < 12, `closed only after ${m[1]} s`);
    await waitFor(() => f.memlog.has("closed: timeout sending reply"), 15_000, "the close line");
  });
});

Deno.test("greetingDelay: a client that talks before the banner gets 554 and is closed", async () => {
  await withFerry({ limits: { greetingDelay: "300ms" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.send("EHLO eager.test\r\n");
      const r = await c.reply(3000);
      assert.equal(r?.code, 554);
      assert.ok(await c.closed());
      assert.ok(f.memlog.has("input before the greeting (554 5.5.0 SMTP synchronization error)"));
    } finally {
      c.close();
    }
  });
});

Deno.test("greetingDelay: a patient client gets the banner after the delay and can send mail", async () => {
  await withFerry({ limits: { greetingDelay: "300ms" } }, async (f) => {
    const t0 = Date.now();
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply(3000))?.code, 220);
      assert.ok(Date.now() - t0 >= 250, `banner after ${Date.now() - t0} ms`);
      assert.equal((await c.cmd("EHLO patient.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("connectionsPerIp: a third connection from one address gets 421 4.7.0; a slot frees when one leaves", async () => {
  await withFerry({ limits: { connectionsPerIp: 2 } }, async (f) => {
    const a = await RawClient.connect(f.port);
    const b = await RawClient.connect(f.port);
    const clients = [a, b];
    try {
      assert.equal((await a.reply())?.code, 220);
      assert.equal((await b.reply())?.code, 220);
      const c = await RawClient.connect(f.port);
      clients.push(c);
      const r = await c.reply();
      assert.equal(r?.code, 421);
      assert.match(r!.text, /^4\.7\.0 /);
      assert.ok(await c.closed());
      assert.ok(f.memlog.has("too many connections from that IP"));
      // After one client quits, a new one is served.
      assert.equal((await a.cmd("QUIT"))?.code, 221);
      assert.ok(await a.closed());
      const d = await RawClient.connect(f.port);
      clients.push(d);
      assert.equal((await d.reply())?.code, 220);
    } finally {
      for (const x of clients) x.close();
    }
  });
});

Deno.test("connections: past the total limit a new connection gets 421 4.7.0", async () => {
  await withFerry({ limits: { connections: 2 } }, async (f) => {
    const a = await RawClient.connect(f.port);
    const b = await RawClient.connect(f.port);
    const clients = [a, b];
    try {
      assert.equal((await a.reply())?.code, 220);
      assert.equal((await b.reply())?.code, 220);
      const c = await RawClient.connect(f.port);
      clients.push(c);
      const r = await c.reply();
      assert.equal(r?.code, 421);
      assert.match(r!.text, /^4\.7\.0 /);
      assert.ok(f.memlog.has("refused: too many connections"));
      b.close();
      // The server notices b is gone; then there is room again (tried until a new connection gets 220).
      await waitFor(
        async () => {
          const d = await RawClient.connect(f.port);
          clients.push(d);
          return (await d.reply())?.code === 220;
        },
        8000,
        "a 220 once b is gone",
      );
    } finally {
      for (const x of clients) x.close();
    }
  });
});

Deno.test("graceful stop: an idle client gets 421 4.3.2; a client mid-transaction may finish its message first", async () => {
  await withFerry({ limits: { shutdownGrace: "3s" } }, async (f) => {
    const idle = await RawClient.connect(f.port);
    const busy = await RawClient.connect(f.port);
    try {
      assert.equal((await idle.reply())?.code, 220);
      assert.equal((await idle.cmd("EHLO idle.test"))?.code, 250);
      assert.equal((await busy.reply())?.code, 220);
      assert.equal((await busy.cmd("EHLO busy.test"))?.code, 250);
      assert.equal((await busy.cmd("MAIL FROM:<s@sender.test>"))?.code, 250);
      const stopping = f.stop();
      const r = await idle.reply();
      assert.equal(r?.code, 421);
      assert.match(r!.text, /^4\.3\.2 /);
      assert.ok(await idle.closed());
      // New connections are no longer accepted.
      await assert.rejects(async () => {
        const late = await RawClient.connect(f.port);
        try {
          if ((await late.reply(1000))?.code !== 220) throw new Error("refused");
        } finally {
          late.close();
        }
      });
      assert.equal((await busy.cmd("RCPT TO:<r@example.test>"))?.code, 250);
      assert.equal((await busy.cmd("DATA"))?.code, 354);
      const done = await busy.cmd("Subject: last\r\n\r\nx\r\n.");
      assert.equal(done?.code, 250);
      const bye = await busy.reply();
      assert.equal(bye?.code, 421);
      await stopping;
    } finally {
      idle.close();
      busy.close();
    }
  });
});
