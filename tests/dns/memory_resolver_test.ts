import { assertEquals, assertRejects } from "./_assert.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { DnsError } from "../../src/dns/dns_error.ts";

Deno.test("MemoryResolver answers from its table: NOERROR, NODATA and NXDOMAIN", async () => {
  const r = new MemoryResolver({
    records: {
      "example.test": {
        MX: [{ preference: 20, exchange: "b.example.test" }, { preference: 10, exchange: "a.example.test" }],
      },
      "a.example.test.": { A: ["192.0.2.1"], TXT: ["v=spf1 -all"] },
      "192.0.2.1": { PTR: ["a.example.test"] },
    },
  });
  assertEquals((await r.mx("EXAMPLE.test")).records.map((m) => m.exchange), [
    "a.example.test",
    "b.example.test",
  ]);
  assertEquals((await r.a("a.example.test")).records, ["192.0.2.1"]);
  assertEquals((await r.ptr("192.0.2.1")).records, ["a.example.test"]);
  const nodata = await r.aaaa("a.example.test");
  assertEquals([nodata.records, nodata.rcode], [[], "NOERROR"]);
  const nx = await r.txt("nope.example.test");
  assertEquals([nx.records, nx.rcode, nx.ad, nx.ttl], [[], "NXDOMAIN", false, 300]);
  assertEquals(r.queries.at(-1), { name: "nope.example.test", type: "TXT" });
});

Deno.test("MemoryResolver follows CNAMEs and combines per-entry AD flags and TTLs", async () => {
  const r = new MemoryResolver({ ad: true });
  r.set("alias.test", "CNAME", ["real.test"], { ttl: 30 });
  r.set("real.test", "A", ["192.0.2.5"]);
  r.set("_25._tcp.real.test", "TLSA", [{
    usage: 3,
    selector: 1,
    matchingType: 1,
    data: new Uint8Array([1, 2]),
  }], {
    ad: false,
  });
  const a = await r.a("alias.test");
  assertEquals([a.records, a.name, a.ad, a.ttl], [["192.0.2.5"], "real.test", true, 30]);
  assertEquals((await r.cname("alias.test")).records, ["real.test"]);
  assertEquals((await r.tlsa("_25._tcp.real.test")).ad, false);
  r.ad = false;
  assertEquals((await r.a("real.test")).ad, false);
});

Deno.test("MemoryResolver throws the failures a test sets, then recovers", async () => {
  const r = new MemoryResolver({ records: { "x.test": { A: ["192.0.2.9"] } } });
  r.fail("x.test", "A");
  r.fail("y.test", "*", "TIMEOUT");
  const err = await assertRejects(() => r.a("x.test"), DnsError);
  assertEquals([err.code, err.temporary], ["SERVFAIL", true]);
  assertEquals((await r.mx("x.test")).rcode, "NOERROR");
  assertEquals((await assertRejects(() => r.txt("y.test"), DnsError)).code, "TIMEOUT");
  r.clearFailures().remove("x.test", "A");
  assertEquals((await r.a("x.test")).records, []);
  r.remove("x.test");
  assertEquals((await r.a("x.test")).rcode, "NXDOMAIN");
  assertEquals((await assertRejects(() => r.ptr("not-ip"), DnsError)).code, "BADNAME");
});
