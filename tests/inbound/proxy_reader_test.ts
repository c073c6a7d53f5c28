import assert from "node:assert/strict";
import type { ByteStream } from "../../src/core/stream.ts";
import { PROXY_V2_SIGNATURE } from "../../src/inbound/proxy_protocol.ts";
import { readProxyHeader } from "../../src/inbound/proxy_reader.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A stream fed by the test: `push` bytes, `end` for EOF; counts reads and what they returned. */
class FakeStream implements ByteStream {
  #queue: Uint8Array[] = [];
  #ended = false;
  #wake: (() => void) | undefined;
  reads = 0;
  closed = false;

  push(b: Uint8Array | string): void {
    this.#queue.push(typeof b === "string" ? enc.encode(b) : b);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    this.reads++;
    while (this.#queue.length === 0 && !this.#ended) {
      await new Promise<void>((r) => (this.#wake = r));
    }
    const next = this.#queue.shift();
    if (!next) return null;
    const n = Math.min(p.length, next.length);
    p.set(next.subarray(0, n));
    if (n < next.length) this.#queue.unshift(next.subarray(n));
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }

  close(): void {
    this.closed = true;
  }
}

async function readAllFrom(s: ByteStream, count: number): Promise<string> {
  let out = "";
  const p = new Uint8Array(64);
  while (out.length < count) {
    const n = await s.read(p);
    if (n === null) break;
    out += dec.decode(p.subarray(0, n));
  }
  return out;
}

Deno.test("readProxyHeader() reassembles a v1 header arriving one byte at a time", async () => {
  const s = new FakeStream();
  const line = "PROXY TCP4 198.51.100.4 10.0.0.1 40000 25\r\n";
  for (const ch of line) s.push(ch);
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.error, undefined);
  assert.deepEqual(r.header?.source, { ip: "198.51.100.4", port: 40000 });
  assert.equal(r.rest.length, 0);
  assert.equal(s.reads, line.length, "one read per byte, none past the header");
});

Deno.test("readProxyHeader() reassembles a v2 header arriving one byte at a time", async () => {
  const s = new FakeStream();
  const block = [192, 0, 2, 1, 127, 0, 0, 1, 0x12, 0x34, 0x00, 0x19, 0x04, 0x00, 0x02, 0xaa, 0xbb];
  const hdr = new Uint8Array([...PROXY_V2_SIGNATURE, 0x21, 0x11, 0, block.length, ...block]);
  for (const b of hdr) s.push(new Uint8Array([b]));
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.header?.version, 2);
  assert.deepEqual(r.header?.source, { ip: "192.0.2.1", port: 0x1234 });
  assert.deepEqual(r.header?.destination, { ip: "127.0.0.1", port: 25 });
  assert.deepEqual(r.header?.tlvs.map((t) => [...t.value]), [[0xaa, 0xbb]]);
  assert.equal(s.reads, hdr.length);
});

Deno.test("readProxyHeader() hands back bytes an early talker sent with the header", async () => {
  const s = new FakeStream();
  s.push("PROXY TCP6 2001:db8::5 2001:db8::1 1025 587\r\nEHLO early\r\n");
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.header?.family, "TCP6");
  assert.equal(dec.decode(r.rest), "EHLO early\r\n");
  s.push("QUIT\r\n");
  assert.equal(await readAllFrom(r.stream, 6), "QUIT\r\n");
});

Deno.test("readProxyHeader() reports an invalid header without waiting for the rest", async () => {
  const s = new FakeStream();
  s.push("PROXY TCP4 1.2.3.256 10.0.0.1 1 2\r\n");
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.header, undefined);
  assert.equal(r.error, "invalid");
  assert.match(r.reason ?? "", /1\.2\.3\.256/);

  const smtp = new FakeStream();
  smtp.push("EHLO"); // no CRLF yet: still refused on the first bytes
  const r2 = await readProxyHeader(smtp, { timeoutMs: 2000 });
  assert.equal(r2.error, "invalid");
  assert.equal(dec.decode(r2.rest), "EHLO");
});

Deno.test("readProxyHeader() refuses a v1 line longer than 107 bytes", async () => {
  const s = new FakeStream();
  s.push("PROXY UNKNOWN ");
  for (let i = 0; i < 20; i++) s.push("xxxxxxxxxx");
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.error, "invalid");
  assert.match(r.reason ?? "", /107/);
});

Deno.test("readProxyHeader() says late when nothing arrives in time and loses no later byte", async () => {
  const s = new FakeStream();
  const t0 = performance.now();
  const r = await readProxyHeader(s, { timeoutMs: 150 });
  const took = performance.now() - t0;
  assert.equal(r.error, "late");
  assert.ok(took >= 140 && took < 1500, `took ${took} ms`);
  assert.equal(r.rest.length, 0);
  // The read still pending on the original stream must deliver into the returned stream.
  s.push("QUIT\r\n");
  assert.equal(await readAllFrom(r.stream, 6), "QUIT\r\n");
});

Deno.test("readProxyHeader() says late when a header starts but does not finish", async () => {
  const s = new FakeStream();
  s.push("PROXY TCP4 1.2.3.4 ");
  const r = await readProxyHeader(s, { timeoutMs: 100 });
  assert.equal(r.error, "late");
  assert.equal(dec.decode(r.rest), "PROXY TCP4 1.2.3.4 ");
});

Deno.test("readProxyHeader() says missing on EOF before the header is complete", async () => {
  const s = new FakeStream();
  s.push(new Uint8Array([...PROXY_V2_SIGNATURE, 0x21, 0x11, 0, 12, 1, 2]));
  s.end();
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.error, "missing");
  assert.match(r.reason ?? "", /after 18 bytes/);

  const empty = new FakeStream();
  empty.end();
  assert.equal((await readProxyHeader(empty, { timeoutMs: 2000 })).error, "missing");
});

Deno.test("readProxyHeader() turns a read error into missing instead of throwing", async () => {
  const s: ByteStream = {
    read: () => Promise.reject(new Error("connection reset")),
    write: (p) => Promise.resolve(p.length),
    close: () => {},
  };
  const r = await readProxyHeader(s, { timeoutMs: 2000 });
  assert.equal(r.error, "missing");
  assert.match(r.reason ?? "", /connection reset/);
});

Deno.test("readProxyHeader() stops when the signal aborts", async () => {
  const s = new FakeStream();
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 30);
  const r = await readProxyHeader(s, { timeoutMs: 5000, signal: ac.signal });
  assert.equal(r.error, "aborted");
  assert.equal((await readProxyHeader(s, { timeoutMs: 5000, signal: ac.signal })).error, "aborted");
});

Deno.test("readProxyHeader() works over a real loopback TCP connection", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
    await client.write(enc.encode("PROXY TCP4 203.0.113.9 "));
    setTimeout(() => client.write(enc.encode("127.0.0.1 61000 25\r\n")).catch(() => {}), 20);
    const r = await readProxyHeader(server, { timeoutMs: 2000 });
    assert.deepEqual(r.header?.source, { ip: "203.0.113.9", port: 61000 });
    await client.write(enc.encode("EHLO a\r\n"));
    assert.equal(dec.decode(r.rest) + (await readAllFrom(r.stream, 8 - r.rest.length)), "EHLO a\r\n");
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("readProxyHeader() keeps a real connection's in-flight read after a timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
    const r = await readProxyHeader(server, { timeoutMs: 80 });
    assert.equal(r.error, "late");
    await client.write(enc.encode("QUIT\r\n"));
    assert.equal(await readAllFrom(r.stream, 6), "QUIT\r\n");
    client.close();
    assert.equal(await r.stream.read(new Uint8Array(8)), null);
  } finally {
    closeQuietly(client);
    closeQuietly(server);
    listener.close();
  }
});

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* already closed */ }
}
