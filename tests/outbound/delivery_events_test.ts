import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { EventHandlers, EventPayload, FerryConfig, FerryEvents } from "../../mod.ts";
import { freePort } from "../helpers/sink.ts";
import {
  type DirFerry,
  linesOf,
  startDownstream,
  startFerryIn,
  submit,
  waitFor,
  withTlsDownstream,
} from "../helpers/downstream.ts";

// Downstream: a Ferry with STARTTLS (certificate for mx.example.test) reached by MX from an in-memory
// resolver, so tls:cert fires; scripted servers and a dead port for failures.

type Recorded = { [K in keyof FerryEvents]?: EventPayload<K>[] };

function recorder(overrides: EventHandlers = {}): { events: EventHandlers; seen: Recorded } {
  const seen: Recorded = {};
  const names: (keyof FerryEvents)[] = [
    "msg:delivery",
    "msg:complete",
    "msg:host:defer",
    "msg:fail:delivery",
    "msg:fail:internal",
    "tcp:connect",
    "tcp:close",
    "smtp:connect",
    "tls:cert",
  ];
  const events: Record<string, (p: unknown) => unknown> = {};
  for (const name of names) {
    const own = (overrides as Record<string, ((p: unknown) => unknown) | undefined>)[name];
    events[name] = (p: unknown) => {
      ((seen as Record<string, unknown[]>)[name] ??= []).push(p);
      return own?.(p);
    };
  }
  return { events: events as EventHandlers, seen };
}

function resolver(): MemoryResolver {
  return new MemoryResolver({
    records: {
      "example.test": { MX: [{ preference: 10, exchange: "mx.example.test" }] },
      "mx.example.test": { A: ["127.0.0.1"] },
    },
  });
}

async function upstream(port: number, events: EventHandlers, extra: FerryConfig = {}): Promise<DirFerry> {
  return await startFerryIn({
    routes: [{ name: "out", domains: "*", mx: true, port }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    events,
    ...extra,
    delivery: { enable: true, idleTimeout: "50ms", ...extra.delivery },
  }, { resolver: resolver() });
}

Deno.test("delivery events carry the facts: tcp:connect, smtp:connect, tls:cert, msg:delivery, msg:complete, tcp:close", async () => {
  await withTlsDownstream(async ({ leaf, down }) => {
    const { events, seen } = recorder();
    const up = await upstream(down.port, events);
    try {
      const id = await submit(up.port, ["user@example.test"]);
      await waitFor(
        () => (seen["tcp:close"]?.length ?? 0) > 0 && (seen["msg:complete"]?.length ?? 0) > 0,
        8000,
        "events",
      );
      const host = { host: "mx.example.test", address: "127.0.0.1", port: down.port };

      assert.equal(seen["tcp:connect"]?.length, 1);
      assert.deepEqual(seen["tcp:connect"]![0], { ...host, id, event: "tcp:connect" });
      assert.equal(seen["smtp:connect"]?.length, 1);
      assert.match(seen["smtp:connect"]![0].banner, /^ferry\.test ESMTP Ferry/);
      assert.deepEqual({ ...seen["smtp:connect"]![0], banner: "" }, {
        ...host,
        banner: "",
        id,
        event: "smtp:connect",
      });

      const certs = seen["tls:cert"] ?? [];
      assert.ok(certs.length >= 1);
      assert.deepEqual(certs.map((c) => c.depth), certs.map((_, i) => i));
      assert.deepEqual(certs[0].certificate, leaf.der);
      assert.equal(certs[0].host, "mx.example.test");
      assert.equal(certs[0].event, "tls:cert");
      assert.equal(certs[0].direction, "outbound");

      assert.equal(seen["msg:delivery"]?.length, 1);
      const d = seen["msg:delivery"]![0];
      assert.equal(d.id, id);
      assert.equal(d.event, "msg:delivery");
      assert.equal(d.sender, "sender@client.test");
      assert.equal(d.recipient, "user@example.test");
      assert.equal(d.router, "out");
      assert.equal(d.transport, "smtp");
      assert.deepEqual(d.host, host);
      assert.match(d.confirmation, /^250 /);
      assert.equal(d.tls?.version, "TLS1.3");
      assert.equal(d.tls?.cv, "no");
      assert.deepEqual(d.tls?.peerCertificate, leaf.der);
      assert.deepEqual(d.tls?.peerChain[0], leaf.der, "the chain starts with the leaf");
      assert.equal(d.sendingIp, "127.0.0.1");
      assert.ok((d.sendingPort ?? 0) > 0);

      assert.deepEqual(seen["msg:complete"], [{ id, sender: "sender@client.test", event: "msg:complete" }]);
      assert.deepEqual(seen["tcp:close"]![0], { ...host, id, event: "tcp:close" });
      assert.equal(seen["msg:host:defer"], undefined);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("msg:host:defer names ECONNREFUSED for a dead host; msg:fail:delivery comes for a 550", async () => {
  const dead = await freePort();
  const rejecting = startDownstream({ rcpt: () => "550 5.1.1 No such user" });
  const { events, seen } = recorder();
  const up = await startFerryIn({
    routes: [
      { name: "deadroute", domains: "dead.test", hosts: [`127.0.0.1:${dead}`] },
      { name: "rejroute", domains: "rej.test", hosts: [`127.0.0.1:${rejecting.port}`] },
    ],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    events,
    delivery: { enable: true },
  }, { resolver: new MemoryResolver() });
  try {
    const id = await submit(up.port, ["a@dead.test", "b@rej.test"], {
      rcptParams: { "a@dead.test": " NOTIFY=NEVER", "b@rej.test": " NOTIFY=NEVER" },
    });
    await waitFor(
      () => linesOf(up.memlog, "==").length > 0 && linesOf(up.memlog, "**").length > 0,
      8000,
      "outcomes",
    );
    await waitFor(() => (seen["msg:fail:delivery"]?.length ?? 0) > 0, 8000, "msg:fail:delivery");
    const defer = seen["msg:host:defer"] ?? [];
    assert.equal(defer.length, 1);
    assert.equal(defer[0].errno, "ECONNREFUSED");
    assert.equal(defer[0].id, id);
    assert.equal(defer[0].router, "deadroute");
    assert.deepEqual(defer[0].host, { host: "127.0.0.1", address: "127.0.0.1", port: dead });
    assert.ok(defer[0].error.length > 0);
    const fail = seen["msg:fail:delivery"]!;
    assert.equal(fail.length, 1);
    assert.equal(fail[0].recipient, "b@rej.test");
    assert.equal(fail[0].router, "rejroute");
    assert.match(fail[0].error, /No such user/);
    assert.equal(seen["msg:delivery"], undefined);
    assert.equal(seen["msg:complete"], undefined, "a@dead.test is still pending");
  } finally {
    await up.dispose();
    await rejecting.stop();
  }
});

Deno.test("tcp:connect returning a string vetoes the connection: nothing is connected and the recipient defers", async () => {
  const target = startDownstream();
  const { events, seen } = recorder({ "tcp:connect": () => "no" });
  const up = await startFerryIn({
    routes: [{ domains: "*", hosts: [`127.0.0.1:${target.port}`] }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    events,
    delivery: { enable: true },
  }, { resolver: new MemoryResolver() });
  try {
    const id = await submit(up.port, ["x@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "deferral");
    assert.match(linesOf(up.memlog, "==")[0], /vetoed by tcp:connect: no/);
    assert.equal(target.connections, 0);
    assert.equal(seen["msg:host:defer"]?.[0].errno, "VETO");
    assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
  } finally {
    await up.dispose();
    await target.stop();
  }
});

Deno.test("smtp:connect returning a string closes the connection after the banner and defers", async () => {
  const target = startDownstream();
  const { events } = recorder({
    "smtp:connect": (p: { banner: string }) => p.banner.includes("scripted") ? "not this one" : undefined,
  });
  const up = await startFerryIn({
    routes: [{ domains: "*", hosts: [`127.0.0.1:${target.port}`] }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    events,
    delivery: { enable: true },
  }, { resolver: new MemoryResolver() });
  try {
    await submit(up.port, ["x@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "deferral");
    assert.match(linesOf(up.memlog, "==")[0], /smtp:connect: not this one/);
    assert.equal(target.connections, 1);
    assert.equal(target.messages.length, 0);
  } finally {
    await up.dispose();
    await target.stop();
  }
});

Deno.test("tls:cert returning a string makes CV=no even with a trusted CA, and defers under tlsVerifyHosts", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const veto = { "tls:cert": (p: { depth: number }) => p.depth === 0 ? "leaf not pinned" : undefined };
    const a = recorder(veto);
    const up = await upstream(down.port, a.events, { delivery: { tlsVerifyCertificates: pki.certFile } });
    try {
      await submit(up.port, ["user@example.test"]);
      await waitFor(() => linesOf(up.memlog, "=>").length > 0, 8000, "delivery");
      assert.match(linesOf(up.memlog, "=>")[0], / X=TLS1\.3:\S+ CV=no /);
    } finally {
      await up.dispose();
    }
    const b = recorder(veto);
    const strict = await upstream(down.port, b.events, {
      delivery: { tlsVerifyCertificates: pki.certFile, tlsVerifyHosts: "*" },
    });
    try {
      await submit(strict.port, ["user@example.test"]);
      await waitFor(() => linesOf(strict.memlog, "==").length > 0, 8000, "deferral");
      assert.match(linesOf(strict.memlog, "==")[0], /refused by tls:cert at depth 0: leaf not pinned/);
      assert.equal(b.seen["msg:host:defer"]?.[0].errno, "TLS");
      assert.equal(await down.spool.count(), 1, "only the first upstream's message arrived");
    } finally {
      await strict.dispose();
    }
  });
});

Deno.test("observer handlers that throw never lose or duplicate mail: exactly one copy arrives", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const boom = () => {
      throw new Error("handler bug");
    };
    const events: EventHandlers = {
      "msg:delivery": boom,
      "msg:complete": boom,
      "tcp:close": boom,
    };
    const up = await upstream(down.port, events, {
      delivery: { tlsVerifyCertificates: pki.certFile, tlsVerifyHosts: "*" },
    });
    try {
      const id = await submit(up.port, ["user@example.test"]);
      await waitFor(() => up.memlog.has("Completed"), 8000, "completion");
      assert.match(linesOf(up.memlog, "=>")[0], / CV=yes /);
      await waitFor(() => up.memlog.has(/event msg:complete: handler .* failed: handler bug/), 15_000, "log");
      assert.ok(up.memlog.has(/event msg:delivery: handler .* failed: handler bug$/));
      // Gone from the upstream spool, the message cannot be delivered again: the counts below are final.
      await waitFor(async () => (await up.spool.get(id)) === undefined, 15_000, "removal from the spool");
      assert.equal(await down.spool.count(), 1);
      assert.equal(linesOf(up.memlog, "=>").length, 1);
      assert.equal(linesOf(up.memlog, "==").length, 0);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("a tls:cert handler that throws or times out fails verification (CV=no; tlsVerifyHosts then defers), logged", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    for (
      const [what, handler] of [
        ["throws", () => {
          throw new Error("handler bug");
        }],
        ["hangs", () => new Promise(() => {})],
      ] as const
    ) {
      // Trusted CA and matching name: only the failing handler can make verification fail.
      const tryOnly = await upstream(down.port, { "tls:cert": handler }, {
        limits: { eventTimeout: "300ms" },
        delivery: { tlsVerifyCertificates: pki.certFile },
      });
      try {
        await submit(tryOnly.port, ["user@example.test"]);
        await waitFor(() => linesOf(tryOnly.memlog, "=>").length > 0, 8000, `${what}: delivery`);
        assert.match(linesOf(tryOnly.memlog, "=>")[0], / CV=no /, what);
        assert.ok(
          tryOnly.memlog.has(/^event tls:cert: handler .* failed: .* \(counts as a veto\)$/),
          tryOnly.memlog.lines.map((l) => l.text).join("\n"),
        );
      } finally {
        await tryOnly.dispose();
      }
    }
    const required = await upstream(down.port, {
      "tls:cert": () => {
        throw new Error("handler bug");
      },
    }, { delivery: { tlsVerifyCertificates: pki.certFile, tlsVerifyHosts: "*" } });
    try {
      await submit(required.port, ["user@example.test"]);
      await waitFor(() => linesOf(required.memlog, "==").length > 0, 8000, "a deferral");
      assert.match(linesOf(required.memlog, "==")[0], /certificate verification failed: refused by tls:cert/);
      assert.equal(linesOf(required.memlog, "=>").length, 0);
    } finally {
      await required.dispose();
    }
  });
});

Deno.test("a tcp:connect or smtp:connect handler that throws defers that attempt, logged; nothing is sent", async () => {
  for (const name of ["tcp:connect", "smtp:connect"] as const) {
    const down = startDownstream();
    const up = await upstream(down.port, {
      [name]: () => {
        throw new Error("lookup failed");
      },
    });
    try {
      const id = await submit(up.port, ["user@example.test"]);
      await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, `${name}: a deferral`);
      assert.match(linesOf(up.memlog, "==")[0], /vetoed by tcp:connect|closed by smtp:connect/);
      assert.ok(
        up.memlog.has(new RegExp(`^event ${name}: handler .* failed: lookup failed \\(counts as a veto\\)$`)),
      );
      assert.equal(down.messages.length, 0);
      assert.equal(down.connections, name === "tcp:connect" ? 0 : 1, `${name}: connections made`);
      assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
    } finally {
      await up.dispose();
      await down.stop();
    }
  }
});

Deno.test("a tcp:connect or smtp:connect veto defers that delivery only: the next message goes to the same host", async () => {
  for (const name of ["tcp:connect", "smtp:connect"] as const) {
    const target = startDownstream();
    let calls = 0;
    const up = await startFerryIn({
      routes: [{ domains: "*", hosts: [`127.0.0.1:${target.port}`] }],
      retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
      events: { [name]: () => (++calls === 1 ? "not this message" : undefined) },
      delivery: { enable: true },
    }, { resolver: new MemoryResolver() });
    try {
      const first = await submit(up.port, ["a@example.test"]);
      await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, `${name}: deferral`);
      assert.match(linesOf(up.memlog, "==")[0], /not this message/);
      const second = await submit(up.port, ["b@example.test"]);
      await waitFor(
        () => linesOf(up.memlog, "=>").length > 0 || linesOf(up.memlog, "==").length > 1,
        8000,
        `${name}: second outcome`,
      );
      assert.deepEqual(linesOf(up.memlog, "=>").map((l) => l.split(" ")[1]), ["b@example.test"], name);
      assert.equal(target.messages.length, 1);
      assert.equal((await up.spool.get(first))?.recipients[0].status, "pending");
      await waitFor(
        async () => (await up.spool.get(second)) === undefined,
        15_000,
        `${name}: second completed`,
      );
    } finally {
      await up.dispose();
      await target.stop();
    }
  }
});

Deno.test('handlers may be registered for a prefix of the colon tree or "*"; the payload names the event', async () => {
  const target = startDownstream();
  const byMsg: string[] = [];
  const byAll: string[] = [];
  const byHost: string[] = [];
  const up = await startFerryIn({
    routes: [{ domains: "*", hosts: [`127.0.0.1:${target.port}`] }],
    events: {
      "msg": (e) => void byMsg.push(e.event),
      "msg:host": (e) => void byHost.push(`${e.event} ${e.errno}`),
      "*": (e) => void byAll.push(e.event),
    },
    delivery: { enable: true, idleTimeout: "50ms" },
  }, { resolver: new MemoryResolver() });
  try {
    await submit(up.port, ["x@example.test"]);
    await waitFor(() => byMsg.includes("msg:complete") && byAll.includes("tcp:close"), 8000, "events");
    assert.deepEqual(byMsg, ["msg:received", "msg:delivery", "msg:complete"]);
    assert.deepEqual(
      [...byAll].sort(),
      ["msg:complete", "msg:delivery", "msg:received", "smtp:connect", "tcp:close", "tcp:connect"],
    );
    assert.deepEqual(byHost, []);
  } finally {
    await up.dispose();
    await target.stop();
  }
});

Deno.test('for a veto the most specific handler wins: a route\'s own, then the exact name, then a prefix, then "*"', async () => {
  const target = startDownstream();
  const order: string[] = [];
  const up = await startFerryIn({
    routes: [
      {
        name: "open",
        domains: "open.test",
        hosts: [`127.0.0.1:${target.port}`],
        // The route's own handler runs first and its explicit "" (no veto) overrides the global veto.
        events: { "tcp:connect": () => (order.push("route tcp:connect"), "") },
      },
      { name: "closed", domains: "*", hosts: [`127.0.0.1:${target.port}`] },
    ],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    events: {
      "*": (e) => e.event === "tcp:connect" ? (order.push("global *"), "star says no") : undefined,
      "tcp": (e) => (e.event === "tcp:connect" && order.push("global tcp"), "tcp says no"),
      "tcp:connect": () => (order.push("global tcp:connect"), undefined),
    },
    delivery: { enable: true },
  }, { resolver: new MemoryResolver() });
  try {
    await submit(up.port, ["x@closed.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "deferral");
    // tcp:connect's handler gave no verdict (undefined): the next most specific, "tcp", decides.
    assert.match(linesOf(up.memlog, "==")[0], /vetoed by tcp:connect: tcp says no/);
    assert.deepEqual(order, ["global tcp:connect", "global tcp", "global *"]);
    order.length = 0;
    await submit(up.port, ["y@open.test"]);
    await waitFor(() => linesOf(up.memlog, "=>").length > 0, 8000, "delivery");
    assert.deepEqual(order.slice(0, 4), [
      "route tcp:connect",
      "global tcp:connect",
      "global tcp",
      "global *",
    ]);
    assert.equal(target.messages.length, 1);
  } finally {
    await up.dispose();
    await target.stop();
  }
});
