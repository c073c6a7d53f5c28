import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { DnsClient } from "../../src/dns/client.ts";
import { DnsError } from "../../src/dns/dns_error.ts";
import {
  decodeMessage,
  EDNS_DO,
  encodeMessage,
  FLAG_AD,
  FLAG_QR,
  FLAG_RD,
  type WireMessage,
  type WireRecord,
} from "../../src/dns/_wire.ts";

type Reply = (
  q: WireMessage,
) => { id?: number; name?: string; type?: string; rcode?: number; ad?: boolean }[];

/** A scripted UDP DNS server on loopback: for each query, sends the replies `script` lists, in order. */
async function fakeServer(script: Reply) {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const queries: WireMessage[] = [];
  sock.on("message", (buf: Uint8Array, rinfo: { address: string; port: number }) => {
    const q = decodeMessage(buf)!;
    queries.push(q);
    for (const r of script(q)) {
      const name = r.name ?? q.questions[0].name;
      const type = r.type ?? q.questions[0].type;
      const answers: WireRecord[] = r.rcode ? [] : [{ name, type: "A", ttl: 60, data: "192.0.2.1" }];
      const bytes = encodeMessage({
        id: r.id ?? q.id,
        type: "response",
        flags: FLAG_QR | FLAG_RD | (r.rcode ?? 0) | (r.ad ? FLAG_AD : 0),
        questions: [{ name, type, class: "IN" }],
        answers,
      });
      sock.send(Buffer.from(bytes), rinfo.port, rinfo.address);
    }
  });
  return { port: sock.address().port, queries, close: () => sock.close() };
}

Deno.test("DnsClient sends RD, AD and EDNS0 with DO, with a fresh random id per query", async () => {
  const s = await fakeServer(() => [{}]);
  try {
    const c = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: s.port }], cacheSize: 0 });
    for (let i = 0; i < 4; i++) await c.a("host.example");
    const q = s.queries[0];
    assert(q.flags & FLAG_RD);
    assert(q.flags & FLAG_AD);
    const opt = q.additionals.find((r) => r.type === "OPT") as unknown as {
      udpPayloadSize: number;
      flags: number;
    };
    assertEquals(opt.udpPayloadSize, 1232);
    assert(opt.flags & EDNS_DO);
    assertEquals(q.questions, [{ name: "host.example", type: "A", class: "IN" }]);
    assert(new Set(s.queries.map((x) => x.id)).size > 1, "ids vary");
  } finally {
    s.close();
  }
});

Deno.test("DnsClient ignores responses with the wrong id, name or type and takes the matching one", async () => {
  const s = await fakeServer((q) => [
    { id: (q.id + 1) & 0xffff, ad: true },
    { name: "evil.example", ad: true },
    { type: "MX", ad: true },
    {},
  ]);
  try {
    const c = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: s.port }], timeout: 500 });
    const a = await c.a("host.example");
    assertEquals([a.records, a.ad], [["192.0.2.1"], false]);
  } finally {
    s.close();
  }
});

Deno.test("DnsClient times out when only spoofed responses arrive", async () => {
  const s = await fakeServer((q) => [{ id: q.id ^ 0x5555 }, { name: "other.example" }]);
  try {
    const c = new DnsClient({
      nameservers: [{ address: "127.0.0.1", port: s.port }],
      timeout: 80,
      attempts: 2,
    });
    const err = await assertRejects(() => c.a("host.example"), DnsError);
    assertEquals([err.code, err.temporary, err.qname], ["TIMEOUT", true, "host.example"]);
    assertEquals(s.queries.length, 2);
  } finally {
    s.close();
  }
});

Deno.test("DnsClient moves on after SERVFAIL or REFUSED and does not ask that server again", async () => {
  const failing = await fakeServer(() => [{ rcode: 2 }]);
  const refusing = await fakeServer(() => [{ rcode: 5 }]);
  try {
    const both = new DnsClient({
      nameservers: [{ address: "127.0.0.1", port: failing.port }, {
        address: "127.0.0.1",
        port: refusing.port,
      }],
      timeout: 200,
      attempts: 3,
    });
    const err = await assertRejects(() => both.a("host.example"), DnsError);
    assertEquals([err.code, err.temporary], ["REFUSED", true]);
    assertEquals([failing.queries.length, refusing.queries.length], [1, 1]);
  } finally {
    failing.close();
    refusing.close();
  }
});

Deno.test("DnsClient keeps AD from a loopback resolver unless trustAd says never", async () => {
  const s = await fakeServer(() => [{ ad: true }]);
  try {
    const server = { address: "127.0.0.1", port: s.port };
    assertEquals((await new DnsClient({ nameservers: [server] }).a("h.example")).ad, true);
    assertEquals((await new DnsClient({ nameservers: [server], trustAd: "never" }).a("h.example")).ad, false);
    assertEquals(
      (await new DnsClient({ nameservers: [{ ...server, trusted: false }] }).a("h.example")).ad,
      true,
    );
  } finally {
    s.close();
  }
});

Deno.test("DnsClient sends one query for concurrent identical questions", async () => {
  const s = await fakeServer(() => [{}]);
  try {
    const c = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: s.port }] });
    const all = await Promise.all([c.a("h.example"), c.a("H.example."), c.a("h.example")]);
    assertEquals(all.map((a) => a.records), [["192.0.2.1"], ["192.0.2.1"], ["192.0.2.1"]]);
    assertEquals(s.queries.length, 1);
  } finally {
    s.close();
  }
});

/** A UDP socket and a TCP listener on the same free loopback port (retried when another test holds one half). */
async function udpAndTcpOnOnePort() {
  for (let attempt = 0;; attempt++) {
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (tcp.addr as Deno.NetAddr).port;
    const udp = dgram.createSocket("udp4");
    const bound = await new Promise<boolean>((r) => {
      udp.once("error", () => r(false));
      udp.bind(port, "127.0.0.1", () => r(true));
    });
    if (bound) return { udp, tcp, port };
    tcp.close();
    udp.close();
    if (attempt > 20) throw new Error("no loopback port free for both UDP and TCP");
  }
}

Deno.test("DnsClient retries over TCP when a truncated datagram is cut inside a record", async () => {
  const { udp, tcp, port } = await udpAndTcpOnOnePort();
  const full = (q: WireMessage, flags: number) =>
    encodeMessage({
      id: q.id,
      type: "response",
      flags: FLAG_QR | FLAG_RD | flags,
      questions: q.questions,
      answers: Array.from(
        { length: 40 },
        (_, i) => ({ name: q.questions[0].name, type: "A", ttl: 60, data: `192.0.2.${i}` }),
      ),
    });
  udp.on("message", (buf: Uint8Array, rinfo: { address: string; port: number }) => {
    const cut = full(decodeMessage(buf)!, 0x0200).subarray(0, 100);
    udp.send(Buffer.from(cut), rinfo.port, rinfo.address);
  });
  const serving = (async () => {
    const conn = await tcp.accept();
    const buf = new Uint8Array(512);
    const n = (await conn.read(buf))!;
    const reply = full(decodeMessage(buf.subarray(2, n))!, 0);
    const framed = new Uint8Array(reply.length + 2);
    new DataView(framed.buffer).setUint16(0, reply.length);
    framed.set(reply, 2);
    await conn.write(framed);
    conn.close();
  })();
  try {
    const c = new DnsClient({ nameservers: [{ address: "127.0.0.1", port }], timeout: 500, attempts: 1 });
    const a = await c.a("big.example");
    assertEquals(a.records.length, 40);
    assertEquals(c.stats.tcp, 1);
    await serving;
  } finally {
    udp.close();
    tcp.close();
  }
});
