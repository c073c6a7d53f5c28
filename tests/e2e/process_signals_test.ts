/**
 * Signals on the real process: SIGTERM is a graceful stop (idle sessions get 421, open transactions may
 * finish within `limits.shutdownGrace`, new connections are refused, exit 0); SIGHUP reopens the log file
 * (logrotate); SIGUSR1 is ignored (Deno would open its inspector on 127.0.0.1:9229). Also the JSON log
 * format as written by the process.
 */

import assert from "node:assert/strict";
import { RawClient } from "../helpers/ferry.ts";
import {
  FerryProcess,
  freePort,
  REPO_DIR,
  sendMessage,
  spoolIds,
  startTaskFlags,
} from "../helpers/process.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";

/** Opens a transaction and sends the first half of the content; returns the client. */
async function halfSent(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO open.test"))?.code, 250);
  assert.equal((await c.cmd("MAIL FROM:<open@sender.test>"))?.code, 250);
  assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
  assert.equal((await c.cmd("DATA"))?.code, 354);
  await c.send("Message-ID: <half@client.test>\r\nSubject: half\r\n\r\nfirst half\r\n");
  return c;
}

async function idle(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO idle.test"))?.code, 250);
  return c;
}

Deno.test("SIGTERM: idle sessions get 421, new connections are refused, an open transaction finishes, exit 0", async () => {
  const f = await FerryProcess.start({ extra: `limits: { shutdownGrace: "5s" },` });
  const clients: RawClient[] = [];
  try {
    await f.waitFor(/Ferry started/);
    const open = await halfSent(f.port);
    clients.push(open);
    const idler = await idle(f.port);
    clients.push(idler);
    const t0 = Date.now();
    f.signal("SIGTERM");

    const bye = await idler.reply(3000);
    assert.equal(bye?.code, 421, JSON.stringify(bye));
    assert.match(bye!.text, /4\.3\.2 .*shutting down/);
    assert.ok(await idler.closed(), "the idle connection is closed after the 421");

    // The listener is closed before sessions are asked to stop, so this is refused at the TCP level.
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: f.port }),
      Deno.errors.ConnectionRefused,
    );

    assert.equal(f.exited, undefined, "the process waits for the open transaction");
    const done = await open.cmd("second half\r\n.");
    assert.equal(done?.code, 250, JSON.stringify(done));
    const id = /id=(\S+)/.exec(done!.text)![1];
    // After its transaction the session ends too.
    const after = await open.reply(3000);
    assert.ok(after === null || after.code === 421, JSON.stringify(after));

    const status = await f.wait(5000);
    assert.equal(status?.code, 0);
    assert.ok(Date.now() - t0 < 5000, `exited within the grace period (${Date.now() - t0} ms)`);
    assert.match(f.stdout, /SIGTERM received: stopping/);
    assert.match(f.stdout, /Ferry stopped\n$/);
    assert.match(f.stdout, new RegExp(`${id} <= open@sender\\.test .* id=half@client\\.test`));
    assert.deepEqual(await spoolIds(f.spoolDir), [id]);
  } finally {
    for (const c of clients) c.close();
    await f.cleanup();
  }
});

Deno.test("SIGTERM: a transaction still open when the grace period ends gets 421 and the process exits 0", async () => {
  const f = await FerryProcess.start({ extra: `limits: { shutdownGrace: "1s" },` });
  let open: RawClient | undefined;
  try {
    await f.waitFor(/Ferry started/);
    open = await halfSent(f.port);
    const t0 = Date.now();
    f.signal("SIGTERM");
    const r = await open.reply(5000);
    const waited = Date.now() - t0;
    assert.equal(r?.code, 421, JSON.stringify(r));
    assert.ok(waited >= 900, `421 came only after the grace period (${waited} ms)`);
    assert.ok(await open.closed());
    const status = await f.wait(5000);
    assert.equal(status?.code, 0);
    assert.ok(Date.now() - t0 < 4000, `exited soon after the grace period (${Date.now() - t0} ms)`);
    assert.doesNotMatch(f.stdout, / <= /, "the unfinished message was not accepted");
    assert.deepEqual(await spoolIds(f.spoolDir), []);
  } finally {
    open?.close();
    await f.cleanup();
  }
});

Deno.test("SIGHUP reopens the log file: after a rename the next lines go to a new file at the configured path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-e2e-" });
  const logFile = `${dir}/ferry.log`;
  const f = await FerryProcess.start({ dir, extra: `log: { file: ${JSON.stringify(logFile)} },` });
  try {
    const read = () => Deno.readTextFile(logFile);
    await f.waitFor(/Ferry started/, 15_000, read);
    await Deno.rename(logFile, `${logFile}.1`);
    f.signal("SIGHUP");
    await f.waitFor(/SIGHUP received: log file reopened/, 15_000, read);
    const id = await sendMessage(f.port, {
      content: "Message-ID: <hup@client.test>\r\n\r\nafter rotation\r\n",
    });
    const line = await f.waitFor(/^.* <= .*$/m, 15_000, read);
    assert.match(
      line[0],
      new RegExp(`${id} <= a@sender\\.test H=\\(client\\.test\\) \\[127\\.0\\.0\\.1\\]:\\d+ `),
    );
    assert.match(line[0], / id=hup@client\.test /);
    const old = await Deno.readTextFile(`${logFile}.1`);
    assert.match(old, /Ferry started/);
    assert.doesNotMatch(old, / <= |SIGHUP/, "nothing after the SIGHUP went to the renamed file");
    assert.equal(f.exited, undefined, "SIGHUP does not stop the process");
    assert.equal((await f.stop()).code, 0);
    assert.match(await read(), /Ferry stopped/);
  } finally {
    await f.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP when the log path cannot be opened keeps the process serving; a later SIGHUP recovers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-e2e-" });
  const logDir = `${dir}/logs`;
  await Deno.mkdir(logDir);
  const logFile = `${logDir}/ferry.log`;
  const f = await FerryProcess.start({ dir, extra: `log: { file: ${JSON.stringify(logFile)} },` });
  try {
    const read = () => Deno.readTextFile(logFile);
    await f.waitFor(/Ferry started/, 15_000, read);
    await Deno.remove(logDir, { recursive: true });
    f.signal("SIGHUP");
    // Still alive and taking mail.
    const first = await sendMessage(f.port);
    assert.equal(f.exited, undefined, `the process survived the SIGHUP; stderr:\n${f.stderr}`);
    await Deno.mkdir(logDir);
    f.signal("SIGHUP");
    await f.waitFor(/SIGHUP received: log file reopened/, 15_000, read);
    const second = await sendMessage(f.port);
    await f.waitFor(new RegExp(`${second} <= `), 15_000, read);
    assert.doesNotMatch(await read(), new RegExp(first), "the first message was logged to the old file");
    assert.equal((await f.stop()).code, 0);
    assert.equal(f.stderr, "");
  } finally {
    await f.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the JSON log format writes one JSON object a line, the <= event with sender, size and id", async () => {
  const f = await FerryProcess.start({ extra: `log: { format: "json" },` });
  try {
    await f.waitFor(/Ferry started/);
    const id = await sendMessage(f.port, {
      from: "json@sender.test",
      content: "Message-ID: <json@client.test>\r\n\r\nhello\r\n",
    });
    await f.waitFor(/"event":"<="/);
    assert.equal((await f.stop()).code, 0);
    const lines = f.stdout.split("\n").filter((l) => l !== "");
    const objs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const o of objs) {
      assert.equal(typeof o.time, "string");
      assert.ok(!Number.isNaN(Date.parse(o.time as string)), "time is a date");
      assert.equal(typeof o.msg, "string");
    }
    const got = objs.filter((o) => o.event === "<=");
    assert.equal(got.length, 1);
    const e = got[0];
    assert.equal(e.id, id);
    assert.equal(e.sender, "json@sender.test");
    assert.equal(e.client, "127.0.0.1");
    assert.deepEqual(e.recipients, ["b@example.test"]);
    assert.equal(typeof e.size, "number");
    assert.match(e.msg as string, new RegExp(`^<= json@sender\\.test .* S=${e.size} id=json@client\\.test`));
    assert.ok(objs.some((o) => o.msg === "Ferry stopped"));
  } finally {
    await f.cleanup();
  }
});

Deno.test("SIGTERM while the scheduler still starts (listeners already up) is a graceful stop with exit 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-e2e-" });
  let f: FerryProcess | undefined;
  try {
    // A full queue makes start-up after the listeners bind (scheduler loading the spool) take a while.
    const spool = new SqliteSpool({ dir: `${dir}/spool`, thread: "main", maxBatch: 1000 });
    await spool.open();
    const data = new TextEncoder().encode(`Subject: queued\r\n\r\n${"y".repeat(1000)}\r\n`);
    await Promise.all(Array.from({ length: 8000 }, () => {
      const id = spool.newId();
      return spool.store({
        id,
        sender: "q@sender.test",
        recipients: [{ address: "c@example.test", status: "pending" }],
        size: data.length,
        receivedAt: Date.now(),
        protocol: "esmtp",
        client: { ip: "127.0.0.1", port: 1 },
        receivedBy: "ferry.test",
      }, data);
    }));
    await spool.close();
    const closed = freePort();
    // Delivery on, but only to a closed loopback port (and no DNS beyond loopback).
    f = await FerryProcess.spawn({
      dir,
      set: {
        delivery: `{ enable: true, queueInterval: "1h" }`,
        routes: `[{ domains: "*", hosts: ["127.0.0.1"], port: ${closed} }]`,
        dns: `{ nameservers: [{ address: "127.0.0.1", port: ${closed} }] }`,
      },
    });
    await f.waitFor(/listening on/, 10_000);
    f.signal("SIGTERM");
    const status = await f.wait(10_000);
    assert.equal(status?.signal, null, `not killed by the signal; output:\n${f.stdout.slice(-2000)}`);
    assert.equal(status?.code, 0);
    assert.match(f.stdout, /SIGTERM received: stopping/);
    assert.match(f.stdout, /Ferry stopped\n$/);
  } finally {
    await f?.cleanup();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp and tcp6. */
async function listeningInodes(port: number): Promise<Set<string>> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const out = new Set<string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(file).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      if (f.length > 9 && f[1].endsWith(`:${hex}`) && f[3] === "0A") out.add(f[9]);
    }
  }
  return out;
}

/** Socket inodes the process `pid` holds open. */
async function socketInodes(pid: number): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const e of Deno.readDir(`/proc/${pid}/fd`)) {
    const target = await Deno.readLink(`/proc/${pid}/fd/${e.name}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) out.add(m[1]);
  }
  return out;
}

Deno.test("SIGUSR1 opens no inspector on 127.0.0.1:9229 (Ferry started as deno.json and the Dockerfile run it) and Ferry keeps serving", async () => {
  // The command README.md documents (deno task start) and the image's CMD grant the same permissions.
  const flags = await startTaskFlags();
  assert.ok(flags.includes("--allow-ffi"), `start task flags: ${flags}`);
  const dockerfile = await Deno.readTextFile(`${REPO_DIR}Dockerfile`);
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)?.[1] ?? "[]") as string[];
  assert.deepEqual(cmd.filter((w) => w.startsWith("--allow-")), flags, "Dockerfile CMD and deno task start");

  const f = await FerryProcess.start({ permissions: flags });
  try {
    const pid = f.child.pid;
    await f.waitFor(/Ferry started/);
    f.signal("SIGUSR1");
    // Positive signal first: a whole transaction after the signal.
    const id = await sendMessage(f.port);
    await f.waitFor(new RegExp(`${id} <= `));
    assert.equal(f.exited, undefined, `Ferry survived SIGUSR1; stderr:\n${f.stderr}`);
    const mine = await socketInodes(pid);
    const on9229 = [...await listeningInodes(9229)].filter((i) => mine.has(i));
    assert.deepEqual(on9229, [], "Ferry listens on port 9229");
    assert.doesNotMatch(f.stderr, /Debugger listening/);
    assert.doesNotMatch(f.stdout, /SIGUSR1 not ignored/);
    // The mechanism: the kernel discards a SIGUSR1 (bit 10-1 of SigIgn) before any handler could see it.
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const ignored = BigInt(`0x${/^SigIgn:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? "0"}`);
    assert.equal((ignored >> 9n) & 1n, 1n, `SIGUSR1 is ignored; ${/^SigIgn.*$/m.exec(status)?.[0]}`);

    assert.equal((await f.stop()).code, 0);
  } finally {
    await f.cleanup();
  }
});
