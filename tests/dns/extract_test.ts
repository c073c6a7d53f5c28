import { assertEquals } from "./_assert.ts";
import { extractAnswer } from "../../src/dns/_extract.ts";
import { decodeMessage, encodeMessage, FLAG_AD, FLAG_QR, type WireRecord } from "../../src/dns/_wire.ts";

const LIMITS = { maxTtl: 86400, maxNegativeTtl: 3600 };

function response(
  qname: string,
  qtype: string,
  answers: WireRecord[],
  authorities: WireRecord[] = [],
  rcode = 0,
  ad = false,
) {
  const bytes = encodeMessage({
    id: 7,
    type: "response",
    flags: FLAG_QR | rcode | (ad ? FLAG_AD : 0),
    questions: [{ name: qname, type: qtype }],
    answers,
    authorities,
  });
  return decodeMessage(bytes)!;
}

const soa = (ttl: number, minimum: number): WireRecord => ({
  name: "example.test",
  type: "SOA",
  ttl,
  data: {
    mname: "ns1.example.test",
    rname: "hostmaster.example.test",
    serial: 1,
    refresh: 1,
    retry: 1,
    expire: 1,
    minimum,
  },
});

Deno.test("extractAnswer() follows a CNAME chain and takes the lowest TTL along it", () => {
  const msg = response("www.example.test", "A", [
    { name: "www.example.test", type: "CNAME", ttl: 30, data: "Mid.Example.test" },
    { name: "mid.example.test", type: "CNAME", ttl: 600, data: "end.example.test" },
    { name: "end.example.test", type: "A", ttl: 300, data: "192.0.2.1" },
    { name: "unrelated.example.test", type: "A", ttl: 300, data: "192.0.2.99" },
  ]);
  assertEquals(extractAnswer(msg, "www.example.test", "A", LIMITS), {
    records: ["192.0.2.1"],
    ad: false,
    ttl: 30,
    rcode: "NOERROR",
    name: "end.example.test",
  });
});

Deno.test("extractAnswer() ignores records for names outside the chain and survives CNAME loops", () => {
  const stray = response("a.test", "A", [{ name: "b.test", type: "A", ttl: 5, data: "192.0.2.2" }]);
  assertEquals(extractAnswer(stray, "a.test", "A", LIMITS).records, []);
  const loop = response("a.test", "A", [
    { name: "a.test", type: "CNAME", ttl: 5, data: "b.test" },
    { name: "b.test", type: "CNAME", ttl: 5, data: "a.test" },
  ]);
  const got = extractAnswer(loop, "a.test", "A", LIMITS);
  assertEquals([got.records, got.rcode], [[], "NOERROR"]);
});

Deno.test("extractAnswer() takes the negative TTL as min(SOA TTL, SOA minimum), capped, and 0 without SOA", () => {
  const nx = response("x.example.test", "MX", [], [soa(300, 60)], 3, true);
  assertEquals(extractAnswer(nx, "x.example.test", "MX", LIMITS), {
    records: [],
    ad: true,
    ttl: 60,
    rcode: "NXDOMAIN",
    name: "x.example.test",
  });
  assertEquals(extractAnswer(response("x.test", "A", [], [soa(20, 900)]), "x.test", "A", LIMITS).ttl, 20);
  assertEquals(extractAnswer(nx, "x.example.test", "MX", { maxTtl: 10, maxNegativeTtl: 7 }).ttl, 7);
  assertEquals(extractAnswer(response("x.test", "A", []), "x.test", "A", LIMITS).ttl, 0);
});

Deno.test("extractAnswer() converts TXT, AAAA and MX and drops records of another type", () => {
  const msg = response("t.test", "TXT", [
    { name: "t.test", type: "TXT", ttl: 9, data: ["v=DKIM1; ", "p=AB", "CD"] },
    { name: "t.test", type: "A", ttl: 9, data: "192.0.2.3" },
  ]);
  assertEquals(extractAnswer(msg, "t.test", "TXT", LIMITS).records, ["v=DKIM1; p=ABCD"]);
  const six = response("s.test", "AAAA", [{
    name: "s.test",
    type: "AAAA",
    ttl: 9,
    data: "2001:DB8:0:0:0:0:0:10",
  }]);
  assertEquals(extractAnswer(six, "s.test", "AAAA", LIMITS).records, ["2001:db8::10"]);
  const mx = response("m.test", "MX", [
    { name: "m.test", type: "MX", ttl: 9, data: { preference: 5, exchange: "Z.test" } },
    { name: "m.test", type: "MX", ttl: 4, data: { preference: 0, exchange: "." } },
  ]);
  const got = extractAnswer(mx, "m.test", "MX", LIMITS);
  assertEquals(got.records, [{ preference: 0, exchange: "." }, { preference: 5, exchange: "z.test" }]);
  assertEquals(got.ttl, 4);
});
