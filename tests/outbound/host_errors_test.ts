import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryConfig } from "../../mod.ts";
import {
  type DirFerry,
  type Downstream,
  type DownstreamOptions,
  linesOf,
  startDownstream,
  startFerryIn,
  submit,
  waitFor,
} from "../helpers/downstream.ts";

// Two MX hosts for mx.test: mx1 (preference 10) on 127.0.0.2 and mx2 (20) on 127.0.0.3, same port, as an
// MX route has one port for all its hosts.

/** A port that is free on both 127.0.0.2 and 127.0.0.3. */
function sharedPort(): number {
  for (let i = 0; i < 20; i++) {
    const a = Deno.listen({ hostname: "127.0.0.2", port: 0 });
    const port = (a.addr as Deno.NetAddr).port;
    a.close();
    try {
      Deno.listen({ hostname: "127.0.0.3", port }).close();
      return port;
    } catch { /* taken there: try another */ }
  }
  throw new Error("no port free on both addresses");
}

function mxResolver(): MemoryResolver {
  return new MemoryResolver({
    records: {
      "mx.test": {
        MX: [{ preference: 10, exchange: "mx1.mx.test" }, { preference: 20, exchange: "mx2.mx.test" }],
      },
      "mx1.mx.test": { A: ["127.0.0.2"] },
      "mx2.mx.test": { A: ["127.0.0.3"] },
    },
  });
}

async function upstream(port: number, extra: FerryConfig = {}): Promise<DirFerry> {
  return await startFerryIn({
    routes: [{ domains: "*", mx: true, port }],
    ...extra,
    delivery: { enable: true, ...extra.delivery },
  }, { resolver: mxResolver() });
}

async function withHosts(
  mx1: DownstreamOptions | "dead",
  mx2: DownstreamOptions,
  fn: (hosts: { mx1?: Downstream; mx2: Downstream; port: number }) => Promise<void>,
): Promise<void> {
  const port = sharedPort();
  const one = mx1 === "dead" ? undefined : startDownstream({ ...mx1, hostname: "127.0.0.2", port });
  const two = startDownstream({ ...mx2, hostname: "127.0.0.3", port });
  try {
    await fn({ mx1: one, mx2: two, port });
  } finally {
    await one?.stop();
    await two.stop();
  }
}

const picky: DownstreamOptions = {
  rcpt: (a) =>
    a.startsWith("bad@")
      ? "550 5.1.1 No such user"
      : a.startsWith("later@")
      ? "450 4.2.1 Mailbox busy"
      : undefined,
};

Deno.test("per-recipient replies decide only that recipient: 550 fails, 450 defers, the next MX is not tried", async () => {
  await withHosts(picky, {}, async ({ mx1, mx2, port }) => {
    const up = await upstream(port);
    try {
      const id = await submit(up.port, ["good@mx.test", "bad@mx.test", "later@mx.test"]);
      await waitFor(
        () => linesOf(up.memlog, "==").length + linesOf(up.memlog, "**").length >= 2,
        8000,
        "outcomes",
      );
      const delivered = linesOf(up.memlog, "=>");
      assert.equal(delivered.length, 1);
      assert.match(
        delivered[0],
        /^=> good@mx\.test R=mx0 T=smtp H=mx1\.mx\.test \[127\.0\.0\.2\]:\d+ TLS=none C="250 2\.0\.0/,
      );
      // (The failure report to sender@client.test fails too: client.test does not exist here.)
      const failed = linesOf(up.memlog, "**").filter((l) => l.includes("@mx.test"));
      assert.equal(failed.length, 1);
      assert.match(failed[0], /^\*\* bad@mx\.test R=mx0 T=smtp H=mx1\.mx\.test .*No such user/);
      const deferred = linesOf(up.memlog, "==");
      assert.equal(deferred.length, 1);
      assert.match(deferred[0], /^== later@mx\.test .*Mailbox busy/);
      assert.equal(mx1!.messages.length, 1);
      assert.deepEqual(mx1!.messages[0].rcpts, ["good@mx.test"]);
      assert.equal(mx2.connections, 0, "the second MX must not be tried for per-recipient refusals");
      // The log line comes as each outcome is applied; the group's state is saved just after.
      await waitFor(
        async () => (await up.spool.get(id))?.recipients.some((r) => r.status !== "pending") ?? false,
        8000,
        "saved state",
      );
      const env = await up.spool.get(id);
      const state = Object.fromEntries(env!.recipients.map((r) => [r.address, r.status]));
      assert.deepEqual(state, {
        "good@mx.test": "delivered",
        "bad@mx.test": "failed",
        "later@mx.test": "pending",
      });
      const later = env!.recipients.find((r) => r.address === "later@mx.test")!;
      assert.equal(later.attempts, 1);
      assert.ok((later.nextAttempt ?? 0) > Date.now(), "the next attempt lies ahead");
      assert.match(later.lastError ?? "", /Mailbox busy/);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("a dead first MX (connection refused) is skipped for the second, and stays in back-off", async () => {
  await withHosts("dead", {}, async ({ mx2, port }) => {
    const up = await upstream(port, { delivery: { hostRetryBase: "1m" } });
    try {
      await submit(up.port, ["one@mx.test"]);
      await waitFor(() => up.memlog.has("Completed"), 8000, "first message delivered");
      assert.match(linesOf(up.memlog, "=>")[0], /^=> one@mx\.test .* H=mx2\.mx\.test \[127\.0\.0\.3\]:/);
      const hostErrors = () => up.memlog.lines.filter((l) => l.fields.event === "host_error");
      assert.equal(hostErrors().length, 1);
      assert.equal(hostErrors()[0].fields.errno, "ECONNREFUSED");
      assert.match(hostErrors()[0].text, /^H=mx1\.mx\.test \[127\.0\.0\.2\]:\d+ /);

      // The next message goes straight to mx2: mx1 is in back-off, so no new attempt and no host error.
      await submit(up.port, ["two@mx.test"]);
      await waitFor(() => linesOf(up.memlog, "=>").length === 2, 8000, "second message delivered");
      assert.match(linesOf(up.memlog, "=>")[1], /^=> two@mx\.test .* H=mx2\.mx\.test /);
      assert.equal(hostErrors().length, 1);
      assert.equal(mx2.messages.length, 2);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("a 4xx MAIL reply is the host's problem: the next MX gets the message", async () => {
  await withHosts({ mail: () => "451 4.3.0 Try again later" }, {}, async ({ mx1, mx2, port }) => {
    const up = await upstream(port);
    try {
      await submit(up.port, ["x@mx.test"]);
      await waitFor(() => up.memlog.has("Completed"), 8000, "delivery");
      assert.match(linesOf(up.memlog, "=>")[0], / H=mx2\.mx\.test /);
      assert.equal(mx1!.messages.length, 0);
      assert.equal(mx2.messages.length, 1);
      assert.ok(
        up.memlog.lines.some((l) => l.fields.event === "host_error" && l.fields.errno === "SMTP_4XX"),
      );
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("a 5xx MAIL reply fails every recipient of the group without trying the next MX", async () => {
  await withHosts({ mail: () => "550 5.7.1 Sender refused" }, {}, async ({ mx2, port }) => {
    const up = await upstream(port);
    try {
      await submit(up.port, ["x@mx.test", "y@mx.test"], {
        rcptParams: { "x@mx.test": " NOTIFY=NEVER", "y@mx.test": " NOTIFY=NEVER" },
      });
      await waitFor(() => up.memlog.has("Completed"), 8000, "completion");
      const failed = linesOf(up.memlog, "**");
      assert.equal(failed.length, 2);
      for (const l of failed) assert.match(l, /Sender refused/);
      assert.equal(mx2.connections, 0);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("every MX dead: the recipient is deferred with the last host error and kept", async () => {
  await withHosts("dead", {}, async ({ mx2, port }) => {
    await mx2.stop();
    const up = await upstream(port);
    try {
      const id = await submit(up.port, ["z@mx.test"]);
      await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "deferral");
      assert.match(linesOf(up.memlog, "==")[0], /^== z@mx\.test R=mx0 T=smtp defer.*mx2\.mx\.test/);
      assert.equal(up.memlog.lines.filter((l) => l.fields.event === "host_error").length, 2);
      assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("an MX pointing at this host fails the recipient at once as a mail loop (5.4.6), with no connection", async () => {
  const resolver = new MemoryResolver({
    records: {
      "loop.test": { MX: [{ preference: 10, exchange: "ferry.test" }] },
      "ferry.test": { A: ["127.0.0.1"] },
    },
  });
  const connects: unknown[] = [];
  const internal: { error: string }[] = [];
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port: 25 }],
    events: {
      "tcp:connect": (p) => void connects.push(p),
      "msg:fail:internal": (p) => void internal.push(p),
    },
    delivery: { enable: true },
  }, { resolver });
  try {
    await submit(up.port, ["u@loop.test"], { rcptParams: { "u@loop.test": " NOTIFY=NEVER" } });
    await waitFor(() => up.memlog.has("Completed"), 15_000, "completion");
    const failed = linesOf(up.memlog, "**");
    assert.equal(failed.length, 1);
    assert.match(failed[0], /^\*\* u@loop\.test R=mx0 T=smtp: .*mail loop/);
    assert.equal(connects.length, 0);
    assert.equal(internal.length, 1);
  } finally {
    await up.dispose();
  }
});

/** Postfix's smtp-sink on `hostname:port` that answers 421 and hangs up after `command` (`-Q`). */
async function closingSink(hostname: string, port: number, command: string): Promise<() => Promise<void>> {
  const child = new Deno.Command("/usr/sbin/smtp-sink", {
    args: ["-u", "nobody", "-Q", command, `${hostname}:${port}`, "10"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitFor(
    async () => {
      try {
        (await Deno.connect({ hostname, port })).close();
        return true;
      } catch {
        return false;
      }
    },
    8000,
    "smtp-sink listening",
  );
  return async () => {
    child.kill("SIGTERM");
    await child.status;
  };
}

for (const command of ["rcpt", "data"]) {
  Deno.test(`a 421 to ${command.toUpperCase()} (smtp-sink -Q ${command}) is a host error: the next MX gets the message, the first stays in back-off`, async () => {
    await withHosts("dead", {}, async ({ mx2, port }) => {
      const stopSink = await closingSink("127.0.0.2", port, command);
      const up = await upstream(port);
      try {
        await submit(up.port, ["one@mx.test"]);
        await waitFor(() => up.memlog.has("Completed"), 8000, "delivery over the second MX");
        assert.match(linesOf(up.memlog, "=>")[0], /^=> one@mx\.test .* H=mx2\.mx\.test \[127\.0\.0\.3\]:/);
        assert.equal(linesOf(up.memlog, "==").length, 0, "nothing deferred");
        const hostErrors = () => up.memlog.lines.filter((l) => l.fields.event === "host_error");
        assert.equal(hostErrors().length, 1);
        assert.equal(hostErrors()[0].fields.errno, "SMTP_421");
        assert.match(
          hostErrors()[0].text,
          new RegExp(`^H=mx1\\.mx\\.test \\[127\\.0\\.0\\.2\\]:\\d+ ${command}: 421 `),
        );
        // mx1 is in back-off: the next message goes straight to mx2.
        await submit(up.port, ["two@mx.test"]);
        await waitFor(() => linesOf(up.memlog, "=>").length === 2, 8000, "second delivery");
        assert.match(linesOf(up.memlog, "=>")[1], / H=mx2\.mx\.test /);
        assert.equal(hostErrors().length, 1);
        assert.equal(mx2.messages.length, 2);
      } finally {
        await up.dispose();
        await stopSink();
      }
    });
  });
}

Deno.test("a 550 to one RCPT before a 421 stands; the other recipients go on to the next MX", async () => {
  const first: DownstreamOptions = {
    rcpt: (a) => a.startsWith("bad@") ? "550 5.1.1 No such user" : "421 4.3.2 Shutting down",
  };
  await withHosts(first, {}, async ({ mx1, mx2, port }) => {
    const up = await upstream(port);
    try {
      const id = await submit(up.port, ["bad@mx.test", "good@mx.test", "also@mx.test"], {
        rcptParams: { "bad@mx.test": " NOTIFY=NEVER" },
      });
      await waitFor(() => up.memlog.has("Completed"), 8000, "completion");
      const failed = linesOf(up.memlog, "**");
      assert.equal(failed.length, 1);
      assert.match(failed[0], /^\*\* bad@mx\.test R=mx0 T=smtp H=mx1\.mx\.test .*550 5\.1\.1 No such user/);
      const delivered = linesOf(up.memlog, "=>");
      assert.equal(delivered.length, 2);
      for (const l of delivered) assert.match(l, / H=mx2\.mx\.test /);
      assert.equal(mx1!.messages.length, 0);
      assert.deepEqual(mx2.messages.map((m) => m.rcpts), [["good@mx.test", "also@mx.test"]]);
      assert.equal(await up.spool.get(id), undefined, "the message left the spool");
    } finally {
      await up.dispose();
    }
  });
});
