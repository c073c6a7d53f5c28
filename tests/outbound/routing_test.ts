import assert from "node:assert/strict";
import { DnsClient } from "../../src/dns/client.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import {
  compileRoutes,
  findRoute,
  parseHostPort,
  resolveTargets,
  type Route,
  type RouteSpec,
  RoutingError,
  type SelfInfo,
} from "../../src/outbound/routing.ts";
import { startUnbound } from "../helpers/unbound.ts";
import { startDroppingForwarder } from "../helpers/dane.ts";

const self: SelfInfo = { names: ["ferry.test"], endpoints: ["127.0.0.1:2525"] };

function mxRoute(port = 25): Route {
  return compileRoutes([{ domains: "*", mx: true, port, dsnLasthop: false }])[0];
}

function hostRoute(hosts: RouteSpec["hosts"], port = 25): Route {
  return compileRoutes([{ domains: "*", hosts, port, dsnLasthop: false }])[0];
}

async function routingError(p: Promise<unknown>): Promise<RoutingError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RoutingError, `expected RoutingError, got ${err}`);
    return err;
  }
  assert.fail("expected a RoutingError");
}

Deno.test("resolveTargets() sorts MX hosts by preference and shuffles equal ones", async () => {
  const r = new MemoryResolver({
    records: {
      "example.test": {
        MX: [
          { preference: 30, exchange: "c.example.test" },
          { preference: 10, exchange: "a1.example.test" },
          { preference: 10, exchange: "a2.example.test" },
        ],
      },
      "a1.example.test": { A: ["127.0.0.11"] },
      "a2.example.test": { A: ["127.0.0.12"], AAAA: ["::1"] },
      "c.example.test": { A: ["127.0.0.30"] },
    },
  });
  const orders = new Set<string>();
  for (let i = 0; i < 60; i++) {
    const t = await resolveTargets(mxRoute(), "Example.TEST", r, self);
    // Every address of every host is there, preference 10 ones first, the 30 last.
    assert.equal(t.length, 4);
    assert.deepEqual(t.map((x) => x.preference), [10, 10, 10, 30]);
    assert.equal(t[3].ip, "127.0.0.30");
    assert.equal(t[3].name, "c.example.test");
    const a2 = t.filter((x) => x.name === "a2.example.test").map((x) => x.ip).sort();
    assert.deepEqual(a2, ["127.0.0.12", "::1"]);
    orders.add(t[0].name);
  }
  assert.deepEqual([...orders].sort(), ["a1.example.test", "a2.example.test"]);
});

Deno.test("resolveTargets() uses the domain's own address when it has no MX (implicit MX)", async () => {
  const r = new MemoryResolver({ records: { "bare.test": { A: ["127.0.0.5"], AAAA: ["::1"] } } });
  const t = await resolveTargets(mxRoute(2526), "bare.test", r, self);
  assert.deepEqual(t.map((x) => [x.name, x.ip, x.port]).sort(), [
    ["bare.test", "127.0.0.5", 2526],
    ["bare.test", "::1", 2526],
  ]);
});

Deno.test("resolveTargets() fails a null MX domain permanently with 5.1.10 (RFC 7505)", async () => {
  // Ferry's DNS client gives the root exchange as "."; accept "" too, as a hand-made table might say.
  for (const exchange of [".", ""]) {
    const r = new MemoryResolver({
      records: { "nomail.test": { MX: [{ preference: 0, exchange }], A: ["127.0.0.9"] } },
    });
    const e = await routingError(resolveTargets(mxRoute(), "nomail.test", r, self));
    assert.equal(e.status, "5.1.10");
    assert.equal(e.temporary, false);
  }
});

Deno.test("resolveTargets() reports a mail loop (5.4.6) when the best MX is our own host name", async () => {
  const r = new MemoryResolver({
    records: {
      "loop.test": {
        MX: [{ preference: 10, exchange: "FERRY.test." }, { preference: 20, exchange: "backup.loop.test" }],
      },
      "ferry.test": { A: ["127.0.0.1"] },
      "backup.loop.test": { A: ["127.0.0.2"] },
    },
  });
  const e = await routingError(resolveTargets(mxRoute(), "loop.test", r, self));
  assert.equal(e.status, "5.4.6");
  assert.equal(e.temporary, false);
});

Deno.test("resolveTargets() keeps only MX hosts more preferred than us when we are a backup MX", async () => {
  const r = new MemoryResolver({
    records: {
      "backup.test": {
        MX: [{ preference: 10, exchange: "primary.backup.test" }, { preference: 20, exchange: "ferry.test" }],
      },
      "primary.backup.test": { A: ["127.0.0.3"] },
      "ferry.test": { A: ["127.0.0.1"] },
    },
  });
  const t = await resolveTargets(mxRoute(), "backup.test", r, self);
  assert.deepEqual(t.map((x) => x.name), ["primary.backup.test"]);
});

Deno.test("resolveTargets() reports a loop when the MX host resolves to our own listening endpoint", async () => {
  const r = new MemoryResolver({
    records: {
      "other.test": { MX: [{ preference: 10, exchange: "mx.other.test" }] },
      "mx.other.test": { A: ["127.0.0.1"] },
    },
  });
  const e = await routingError(resolveTargets(mxRoute(2525), "other.test", r, self));
  assert.equal(e.status, "5.4.6");
  assert.equal(e.temporary, false);
  // The same address on another port is someone else.
  const t = await resolveTargets(mxRoute(2600), "other.test", r, self);
  assert.deepEqual(t.map((x) => `${x.ip}:${x.port}`), ["127.0.0.1:2600"]);
});

Deno.test("resolveTargets() fails a domain that does not exist permanently with 5.1.2", async () => {
  const r = new MemoryResolver();
  const e = await routingError(resolveTargets(mxRoute(), "nowhere.test", r, self));
  assert.equal(e.status, "5.1.2");
  assert.equal(e.temporary, false);
});

Deno.test("resolveTargets() defers when DNS fails (SERVFAIL) for the MX or for the MX host", async () => {
  const r = new MemoryResolver({
    records: {
      "sf.test": { MX: [{ preference: 10, exchange: "mx.sf.test" }] },
      "mx.sf.test": { A: ["127.0.0.4"] },
    },
  });
  r.fail("sf.test", "MX");
  let e = await routingError(resolveTargets(mxRoute(), "sf.test", r, self));
  assert.equal(e.temporary, true);
  assert.match(e.status, /^4\./);
  r.clearFailures().fail("mx.sf.test", "A");
  e = await routingError(resolveTargets(mxRoute(), "sf.test", r, self));
  assert.equal(e.temporary, true);
  r.clearFailures();
  assert.equal((await resolveTargets(mxRoute(), "sf.test", r, self))[0].ip, "127.0.0.4");
});

Deno.test("resolveTargets() defers when no MX host has an address", async () => {
  const r = new MemoryResolver({
    records: { "noaddr.test": { MX: [{ preference: 10, exchange: "ghost.noaddr.test" }] } },
  });
  const e = await routingError(resolveTargets(mxRoute(), "noaddr.test", r, self));
  assert.equal(e.temporary, true);
});

Deno.test("parseHostPort() splits names, IPv4 and bracketed IPv6 with and without ports", () => {
  assert.deepEqual(parseHostPort("relay.test", 25), { name: "relay.test", port: 25 });
  assert.deepEqual(parseHostPort("relay.test:2525", 25), { name: "relay.test", port: 2525 });
  assert.deepEqual(parseHostPort("127.0.0.1:587", 25), { name: "127.0.0.1", port: 587 });
  assert.deepEqual(parseHostPort("127.0.0.1", 26), { name: "127.0.0.1", port: 26 });
  assert.deepEqual(parseHostPort("[::1]:2525", 25), { name: "::1", port: 2525 });
  assert.deepEqual(parseHostPort("[127.0.0.2]", 25), { name: "127.0.0.2", port: 25 });
  assert.deepEqual(parseHostPort("::1", 25), { name: "::1", port: 25 });
  assert.throws(() => parseHostPort("a:b:c", 25), RoutingError);
});

Deno.test("resolveTargets() tries configured hosts in order, resolving names and keeping ports", async () => {
  const r = new MemoryResolver({ records: { "smart.test": { A: ["127.0.0.7"] } } });
  const route = hostRoute(["smart.test:2600", "[127.0.0.8]:2601", "127.0.0.9"], 2602);
  const t = await resolveTargets(route, "anything.test", r, self);
  assert.deepEqual(t.map((x) => `${x.name} ${x.ip}:${x.port} ${x.preference}`), [
    "smart.test 127.0.0.7:2600 0",
    "127.0.0.8 127.0.0.8:2601 1",
    "127.0.0.9 127.0.0.9:2602 2",
  ]);
  // The MX of the recipient domain is not asked for a host route.
  assert.equal(r.queries.filter((q) => q.type === "MX").length, 0);
});

Deno.test("resolveTargets() calls a host-list function with the recipient domain", async () => {
  const seen: string[] = [];
  const route = hostRoute((d) => {
    seen.push(d);
    return d === "a.test" ? ["127.0.0.20:2700"] : ["127.0.0.21:2701"];
  });
  const r = new MemoryResolver();
  assert.equal((await resolveTargets(route, "A.Test", r, self))[0].ip, "127.0.0.20");
  assert.equal((await resolveTargets(route, "b.test", r, self))[0].port, 2701);
  assert.deepEqual(seen, ["a.test", "b.test"]);
});

Deno.test("resolveTargets() defers a host route whose hosts have no address", async () => {
  const e = await routingError(
    resolveTargets(hostRoute(["gone.test"]), "x.test", new MemoryResolver(), self),
  );
  assert.equal(e.temporary, true);
});

Deno.test("resolveTargets() refuses a host route that points back at our own listener", async () => {
  const e = await routingError(
    resolveTargets(hostRoute(["127.0.0.1:2525"]), "x.test", new MemoryResolver(), self),
  );
  assert.equal(e.status, "5.4.6");
});

Deno.test("findRoute() returns the first route whose domains match, or undefined", async () => {
  const routes = compileRoutes([
    {
      name: "inside",
      domains: ["corp.test", "*.corp.test"],
      hosts: ["127.0.0.1:2600"],
      port: 25,
      dsnLasthop: false,
    },
    {
      name: "partner",
      domains: ["partner.test", "corp.test"],
      hosts: ["127.0.0.1:2601"],
      port: 25,
      dsnLasthop: false,
    },
    { domains: ["!blocked.test", "*.test"], mx: true, port: 25, dsnLasthop: false },
  ]);
  assert.equal((await findRoute(routes, "CORP.test"))?.name, "inside");
  assert.equal((await findRoute(routes, "mail.corp.test"))?.name, "inside");
  assert.equal((await findRoute(routes, "partner.test"))?.name, "partner");
  assert.equal((await findRoute(routes, "else.test"))?.name, "mx2");
  assert.equal(await findRoute(routes, "blocked.test"), undefined);
  assert.equal(await findRoute(routes, "example.org"), undefined);
});

Deno.test("resolveTargets() over a real unbound: null MX, implicit MX, NXDOMAIN and a normal MX", async () => {
  const unbound = await startUnbound({
    zones: [{
      name: "zone.test",
      records: [
        "nullmx IN MX 0 .",
        "nullmx IN A 127.0.0.9",
        "implicit IN A 127.0.0.10",
        "mailer IN MX 10 mx.mailer",
        "mx.mailer IN A 127.0.0.11",
      ].join("\n"),
    }],
  });
  const dns = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: unbound.port, trusted: false }] });
  try {
    const nullMx = await routingError(resolveTargets(mxRoute(), "nullmx.zone.test", dns, self));
    assert.equal(nullMx.status, "5.1.10");
    assert.equal((await resolveTargets(mxRoute(), "implicit.zone.test", dns, self))[0].ip, "127.0.0.10");
    const t = await resolveTargets(mxRoute(), "mailer.zone.test", dns, self);
    assert.deepEqual(t.map((x) => `${x.name} ${x.ip}`), ["mx.mailer.zone.test 127.0.0.11"]);
    const nx = await routingError(resolveTargets(mxRoute(), "missing.zone.test", dns, self));
    assert.equal(nx.status, "5.1.2");
    assert.equal(nx.temporary, false);
  } finally {
    await unbound.stop();
  }
});

Deno.test("resolveTargets(): an AAAA lookup that fails leaves the A records of an unsigned zone; a signed zone defers", async () => {
  const r = new MemoryResolver({
    ad: true,
    records: {
      "signed.test": { MX: [{ preference: 10, exchange: "mx.signed.test" }] },
      "mx.signed.test": { A: ["127.0.0.4"] },
    },
  });
  r.fail("mx.signed.test", "AAAA", "SERVFAIL");
  const e = await routingError(resolveTargets(mxRoute(), "signed.test", r, self));
  assert.equal(e.temporary, true);
  assert.match(e.message, /mx\.signed\.test \(AAAA\)/);
  // The same answer without the AD bit (an unsigned zone): the A records are used, not DNSSEC-secure.
  const u = new MemoryResolver({
    records: {
      "unsigned.test": { MX: [{ preference: 10, exchange: "mx.unsigned.test" }] },
      "mx.unsigned.test": { A: ["127.0.0.5"] },
    },
  });
  u.fail("mx.unsigned.test", "AAAA", "SERVFAIL");
  const t = await resolveTargets(mxRoute(), "unsigned.test", u, self);
  assert.deepEqual(t.map((x) => [x.ip, x.secure]), [["127.0.0.5", undefined]]);
});

Deno.test("resolveTargets() over a real unbound: an AAAA query that times out does not hide the A records", async () => {
  const unbound = await startUnbound({
    zones: [{
      name: "zone.test",
      records: ["mailer IN MX 10 mx.mailer", "mx.mailer IN A 127.0.0.11"].join("\n"),
    }],
  });
  const fwd = await startDroppingForwarder(unbound.port, ["AAAA"]);
  const dns = new DnsClient({
    nameservers: [{ address: "127.0.0.1", port: fwd.port, trusted: false }],
    timeout: 1500,
    attempts: 1,
  });
  try {
    const t = await resolveTargets(mxRoute(), "mailer.zone.test", dns, self);
    assert.deepEqual(t.map((x) => `${x.name} ${x.ip}`), ["mx.mailer.zone.test 127.0.0.11"]);
    assert.ok(fwd.dropped.includes("mx.mailer.zone.test AAAA"), `${fwd.dropped}`);
  } finally {
    await fwd.stop();
    await unbound.stop();
  }
});
