/** Connection-level limits over the wire: timeouts, the early-talker check, connection counts. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

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

Deno.test("greetingDelay: a client that talks before the banner gets 554 and is closed", async () => {
  await withFerry({ limits: { greetingDelay: "300ms" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.send("EHLO eager.test\r\n");
      const r = await c.reply(3000);
      assert.equal(r?.code, 554);
      assert.ok(await c.closed());
      assert.ok(f.memlog.has("input before the greeting"));
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
      // The server notices b is gone; then there is room again.
      let served = false;
      for (let i = 0; i < 20 && !served; i++) {
        const d = await RawClient.connect(f.port);
        clients.push(d);
        served = (await d.reply())?.code === 220;
        if (!served) await new Promise((res) => setTimeout(res, 50));
      }
      assert.ok(served);
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
