import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { DnsClient, type DnsClientOptions } from "../../src/dns/client.ts";
import { DnsError } from "../../src/dns/dns_error.ts";
import dgram from "node:dgram";
import { startUnbound, type Unbound, type UnboundOptions } from "../helpers/unbound.ts";

const SIGNED = {
  name: "example.test",
  signed: true,
  negativeTtl: 120,
  records: [
    "@ IN MX 20 b",
    "@ IN MX 10 c",
    "@ IN MX 10 a",
    "a IN A 127.0.0.1",
    "a IN AAAA 2001:db8:0:0:0:0:0:1",
    "b IN A 127.0.0.2",
    "c IN A 127.0.0.3",
    'spf IN TXT "v=spf1 " "ip4:127.0.0.1 " "-all"',
    'two IN TXT "first"',
    'two IN TXT "second"',
    "_25._tcp.a IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "alias IN CNAME alias2",
    "alias2 IN CNAME a",
    "away IN CNAME mx.plain.test.",
  ].join("\n"),
};
const PLAIN = {
  name: "plain.test",
  records: ["mx IN A 127.0.0.9", "short 60 IN A 127.0.0.10", 'txt IN TXT "unsigned"'].join("\n"),
};
const BIG = {
  name: "big.test",
  records: Array.from({ length: 60 }, (_, i) => `many IN A 127.0.1.${i + 1}`).join("\n"),
};
const REVERSE = { name: "2.0.192.in-addr.arpa", records: "7 IN PTR mail.example.test." };

async function withUnbound(
  options: UnboundOptions,
  fn: (u: Unbound, client: (o?: DnsClientOptions) => DnsClient) => Promise<void>,
): Promise<void> {
  const u = await startUnbound(options);
  try {
    await fn(
      u,
      (o = {}) => new DnsClient({ nameservers: [{ address: u.address, port: u.port }], timeout: 1000, ...o }),
    );
  } finally {
    await u.stop();
  }
}

const ALL: UnboundOptions = { zones: [SIGNED, PLAIN, BIG, REVERSE], localData: ["local.test. A 127.0.0.5"] };

Deno.test("DnsClient reads MX, A, AAAA, TXT, PTR and TLSA from a validating unbound with AD=1", async () => {
  await withUnbound(ALL, async (_u, client) => {
    const c = client();
    const mx = await c.mx("Example.TEST.");
    assertEquals(mx.records, [
      { preference: 10, exchange: "a.example.test" },
      { preference: 10, exchange: "c.example.test" },
      { preference: 20, exchange: "b.example.test" },
    ]);
    assertEquals([mx.ad, mx.rcode, mx.name], [true, "NOERROR", "example.test"]);
    assert(mx.ttl > 0 && mx.ttl <= 300);
    assertEquals((await c.a("a.example.test")).records, ["127.0.0.1"]);
    assertEquals((await c.aaaa("a.example.test")).records, ["2001:db8::1"]);
    assertEquals((await c.txt("spf.example.test")).records, ["v=spf1 ip4:127.0.0.1 -all"]);
    assertEquals((await c.txt("two.example.test")).records.toSorted(), ["first", "second"]);
    const ptr = await c.ptr("192.0.2.7");
    assertEquals([ptr.records, ptr.name], [["mail.example.test"], "7.2.0.192.in-addr.arpa"]);
    const tlsa = await c.tlsa("_25._tcp.a.example.test");
    assertEquals(tlsa.ad, true);
    assertEquals(tlsa.records.length, 1);
    const t = tlsa.records[0];
    assertEquals([t.usage, t.selector, t.matchingType], [3, 1, 1]);
    assertEquals(t.data.toHex(), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  });
});

Deno.test("DnsClient reports AD=0 for an unsigned zone, for local-data, and when told never to trust AD", async () => {
  await withUnbound(ALL, async (_u, client) => {
    const c = client();
    const plain = await c.a("mx.plain.test");
    assertEquals([plain.records, plain.ad], [["127.0.0.9"], false]);
    const local = await c.a("local.test");
    assertEquals([local.records, local.ad], [["127.0.0.5"], false]);
    assertEquals((await c.mx("example.test")).ad, true);
    const never = await client({ trustAd: "never" }).mx("example.test");
    assertEquals([never.records.length, never.ad], [3, false]);
  });
});

Deno.test("DnsClient follows CNAME chains for the asked type and returns CNAME targets when asked", async () => {
  await withUnbound(ALL, async (_u, client) => {
    const c = client();
    const a = await c.a("alias.example.test");
    assertEquals([a.records, a.name, a.ad], [["127.0.0.1"], "a.example.test", true]);
    assertEquals((await c.cname("alias.example.test")).records, ["alias2.example.test"]);
    const away = await c.a("away.example.test");
    assertEquals([away.records, away.name, away.ad], [["127.0.0.9"], "mx.plain.test", false]);
    const nodata = await c.mx("alias.example.test");
    assertEquals([nodata.records, nodata.rcode, nodata.name], [[], "NOERROR", "a.example.test"]);
  });
});

Deno.test("DnsClient answers NXDOMAIN and NODATA with no records and the SOA negative TTL", async () => {
  await withUnbound(ALL, async (_u, client) => {
    const c = client();
    const nx = await c.a("missing.example.test");
    assertEquals([nx.records, nx.rcode, nx.ad], [[], "NXDOMAIN", true]);
    assert(nx.ttl > 0 && nx.ttl <= 120, `negative ttl ${nx.ttl}`);
    const noTlsa = await c.tlsa("_465._tcp.a.example.test");
    assertEquals([noTlsa.records, noTlsa.rcode, noTlsa.ad], [[], "NXDOMAIN", true]);
    const nodata = await c.mx("a.example.test");
    assertEquals([nodata.records, nodata.rcode, nodata.ad], [[], "NOERROR", true]);
    assert(nodata.ttl > 0 && nodata.ttl <= 120, `negative ttl ${nodata.ttl}`);
    const unsigned = await c.txt("nothing.plain.test");
    assertEquals([unsigned.rcode, unsigned.ad], ["NXDOMAIN", false]);
    const capped = await client({ maxNegativeTtl: 5 }).a("missing.example.test");
    assert(capped.ttl <= 5);
  });
});

Deno.test("DnsClient serves positive and negative answers from its cache without asking again", async () => {
  await withUnbound(ALL, async (u, client) => {
    const c = client({ timeout: 1500, attempts: 1 });
    const first = await c.a("missing.example.test");
    const data = await c.a("a.example.test");
    assertEquals(c.stats.udp, 2);
    await u.stop();
    const again = await c.a("missing.example.test");
    assertEquals([again.rcode, again.ad], [first.rcode, first.ad]);
    assertEquals((await c.a("A.example.test.")).records, data.records);
    assertEquals(c.stats, { udp: 2, tcp: 0, cacheHits: 2 });
    // the server really is gone: anything not cached fails
    const err = await assertRejects(() => c.a("b.example.test"), DnsError);
    assertEquals(err.temporary, true);
  });
});

Deno.test("DnsClient does not serve a cached answer past its TTL", async () => {
  let now = 1_000_000;
  await withUnbound(ALL, async (u, client) => {
    const c = client({ now: () => now, timeout: 1500, attempts: 1 });
    const first = await c.a("short.plain.test");
    assert(first.ttl <= 60 && first.ttl > 50);
    now += 30_000;
    const cached = await c.a("short.plain.test");
    assertEquals(c.stats.udp, 1);
    assert(cached.ttl <= 30, `ttl counts down, got ${cached.ttl}`);
    now += 31_000;
    await c.a("short.plain.test");
    assertEquals(c.stats.udp, 2, "expired entry goes back to the server");
    now += 61_000;
    await u.stop();
    await assertRejects(() => c.a("short.plain.test"), DnsError);
  });
});

Deno.test("DnsClient repeats a truncated UDP answer over TCP", async () => {
  await withUnbound(ALL, async (_u, client) => {
    const small = client({ udpSize: 512 });
    const many = await small.a("many.big.test");
    assertEquals(many.records.length, 60);
    assertEquals(new Set(many.records).size, 60);
    assertEquals(small.stats.tcp, 1);
    const large = client({ udpSize: 4096 });
    assertEquals((await large.a("many.big.test")).records.length, 60);
    assertEquals(large.stats.tcp, 0);
  });
});

Deno.test("DnsClient throws a temporary SERVFAIL DnsError when DNSSEC validation fails", async () => {
  await withUnbound({ zones: [SIGNED], wrongTrustAnchor: true }, async (_u, client) => {
    const err = await assertRejects(() => client().mx("example.test"), DnsError);
    assertEquals([err.code, err.temporary, err.qname, err.qtype], ["SERVFAIL", true, "example.test", "MX"]);
  });
});

Deno.test("DnsClient times out against a dead port with a temporary DnsError and fails over to the next server", async () => {
  await withUnbound(ALL, async (u) => {
    const sink = dgram.createSocket("udp4");
    await new Promise<void>((r) => sink.bind(0, "127.0.0.1", () => r()));
    let seen = 0;
    sink.on("message", () => seen++);
    try {
      const deadPort = sink.address().port;
      const lone = new DnsClient({
        nameservers: [{ address: "127.0.0.1", port: deadPort }],
        timeout: 100,
        attempts: 2,
      });
      const t0 = performance.now();
      const err = await assertRejects(() => lone.a("a.example.test"), DnsError);
      assertEquals([err.code, err.temporary], ["TIMEOUT", true]);
      assert(performance.now() - t0 >= 190, "waited for both tries");
      assertEquals(seen, 2);
      const both = new DnsClient({
        nameservers: [{ address: "127.0.0.1", port: deadPort }, { address: u.address, port: u.port }],
        // Long enough for unbound on a loaded machine; the dead server still costs one timeout first.
        timeout: 1000,
      });
      assertEquals((await both.a("a.example.test")).records, ["127.0.0.1"]);
    } finally {
      sink.close();
    }
  });
});

Deno.test("DnsClient rejects names it cannot ask and addresses that are not IPs without a query", async () => {
  const c = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: 9 }], timeout: 50, attempts: 1 });
  for (const bad of ["", "a..b", `${"x".repeat(64)}.test`, `${"abcdefghi.".repeat(26)}test`]) {
    const err = await assertRejects(() => c.a(bad), DnsError);
    assertEquals([err.code, err.temporary], ["BADNAME", false]);
  }
  const err = await assertRejects(() => c.ptr("300.1.2.3"), DnsError);
  assertEquals(err.code, "BADNAME");
  assertEquals(c.stats.udp, 0);
});

Deno.test("DnsClient stops waiting when the caller's signal aborts", async () => {
  const c = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: 9 }], timeout: 5000, attempts: 1 });
  const ac = new AbortController();
  const p = c.a("a.example.test", { signal: ac.signal });
  setTimeout(() => ac.abort(new Error("caller gave up")), 20);
  const err = await assertRejects(() => p, Error);
  assertEquals(err.message, "caller gave up");
});
