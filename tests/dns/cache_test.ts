import { assertEquals } from "./_assert.ts";
import { DnsCache } from "../../src/dns/cache.ts";
import type { DnsAnswer } from "../../src/dns/resolver.ts";

const answer = (records: string[], ttl: number): DnsAnswer<string> => ({
  records,
  ad: false,
  ttl,
  rcode: records.length ? "NOERROR" : "NXDOMAIN",
  name: "x.test",
});

Deno.test("DnsCache counts TTLs down and never serves an expired entry", () => {
  let now = 0;
  const c = new DnsCache({ now: () => now });
  c.set("x.test", "A", answer(["192.0.2.1"], 10));
  now = 4_500;
  assertEquals(c.get("x.test", "A")?.ttl, 5);
  now = 9_999;
  assertEquals(c.get<string>("x.test", "A")?.records, ["192.0.2.1"]);
  now = 10_000;
  assertEquals(c.get("x.test", "A"), undefined);
  assertEquals(c.size, 0);
});

Deno.test("DnsCache keys by type, skips TTL 0, and copies records so callers cannot change it", () => {
  const c = new DnsCache();
  c.set("x.test", "A", answer(["192.0.2.1"], 60));
  c.set("x.test", "AAAA", answer([], 60));
  c.set("y.test", "A", answer(["192.0.2.2"], 0));
  assertEquals(c.get<string>("x.test", "AAAA")?.rcode, "NXDOMAIN");
  assertEquals(c.get("x.test", "MX"), undefined);
  assertEquals(c.get("y.test", "A"), undefined);
  c.get<string>("x.test", "A")!.records.push("evil");
  assertEquals(c.get<string>("x.test", "A")?.records, ["192.0.2.1"]);
});

Deno.test("DnsCache evicts the least recently used entry when full", () => {
  const c = new DnsCache({ maxEntries: 2 });
  c.set("a.test", "A", answer(["192.0.2.1"], 60));
  c.set("b.test", "A", answer(["192.0.2.2"], 60));
  c.get("a.test", "A");
  c.set("c.test", "A", answer(["192.0.2.3"], 60));
  assertEquals(c.size, 2);
  assertEquals(c.get("b.test", "A"), undefined);
  assertEquals(c.get<string>("a.test", "A")?.records, ["192.0.2.1"]);
  assertEquals(c.get<string>("c.test", "A")?.records, ["192.0.2.3"]);
});
