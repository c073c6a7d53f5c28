/**
 * An error nothing caught (here: operator code in config.ts that throws from a timer or leaves a rejected
 * promise behind) is a panic: `panic:` lines with the error and its stack in the log and on standard error,
 * a graceful stop in which an open transaction still gets its 250, and exit status 70 for the supervisor.
 * Nothing answered 250 is lost: the message is in the spool the restarted process recovers.
 */

import assert from "node:assert/strict";
import { RawClient } from "../helpers/ferry.ts";
import { FerryProcess, spoolIds } from "../helpers/process.ts";

// A helo step that, for one name, leaves behind what a careless config might: a throwing timer callback or a
// promise rejected with nobody listening.
const BUGGY_POLICY = `policy: { helo: [async function buggy(c, next) {
    if (c.helo === "throw.test") setTimeout(() => { throw new Error("timer bug in config"); }, 0);
    if (c.helo === "reject.test") Promise.reject(new TypeError("forgotten promise in config"));
    await next();
  }] },
  limits: { shutdownGrace: "20s" },`;

Deno.test("an uncaught exception is a logged panic: the open transaction finishes with 250, exit 70, message kept", async () => {
  const f = await FerryProcess.start({ extra: BUGGY_POLICY });
  try {
    const open = await RawClient.connect(f.port);
    assert.equal((await open.reply())?.code, 220);
    assert.equal((await open.cmd("EHLO open.test"))?.code, 250);
    assert.equal((await open.cmd("MAIL FROM:<open@sender.test>"))?.code, 250);
    assert.equal((await open.cmd("RCPT TO:<b@example.test>"))?.code, 250);

    const trigger = await RawClient.connect(f.port);
    assert.equal((await trigger.reply())?.code, 220);
    await trigger.cmd("EHLO throw.test");
    await f.waitFor(/panic: uncaught exception: Error: timer bug in config; stopping, exit status 70/);
    trigger.close();

    // The graceful stop lets the open transaction end.
    assert.equal((await open.cmd("DATA"))?.code, 354);
    const done = await open.cmd("Subject: during a panic\r\n\r\nbody\r\n.");
    assert.equal(done?.code, 250, JSON.stringify(done));
    const id = /id=(\S+)/.exec(done!.text)![1];
    await open.cmd("QUIT").catch(() => null);
    open.close();

    const status = await f.wait(30_000);
    assert.equal(status?.code, 70, `stdout: ${f.stdout}\nstderr: ${f.stderr}`);
    // The stack names the config's own frame, in the log and on stderr.
    assert.match(f.stdout, /^\S+ \S+ panic: {5}at .*ferry\.config\.ts:\d+:\d+/m);
    assert.match(
      f.stderr,
      /ferry: panic: uncaught exception: Error: timer bug in config\n {4}at .*ferry\.config\.ts/,
    );
    assert.match(f.stdout, /Ferry stopped/);
    assert.deepEqual(await spoolIds(f.spoolDir), [id]);
  } finally {
    await f.cleanup();
  }
});

Deno.test("an unhandled rejection is a logged panic with exit 70, in the JSON log too", async () => {
  const f = await FerryProcess.start({ extra: `${BUGGY_POLICY} log: { format: "json" },` });
  try {
    const c = await RawClient.connect(f.port);
    assert.equal((await c.reply())?.code, 220);
    await c.cmd("EHLO reject.test").catch(() => null);
    c.close();
    const status = await f.wait(30_000);
    assert.equal(status?.code, 70, `stdout: ${f.stdout}\nstderr: ${f.stderr}`);
    const lines = f.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    const panic = lines.find((l) => l.event === "panic");
    assert.ok(panic, f.stdout);
    assert.equal(panic.kind, "unhandled rejection");
    assert.equal(
      panic.msg,
      "panic: unhandled rejection: TypeError: forgotten promise in config; stopping, exit status 70",
    );
    assert.match(panic.stack, /ferry\.config\.ts:\d+:\d+/);
    assert.ok(lines.some((l) => l.msg === "Ferry stopped"), f.stdout);
  } finally {
    await f.cleanup();
  }
});
