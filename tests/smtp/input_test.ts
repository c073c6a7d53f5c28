import assert from "node:assert/strict";
import { Input, ReadTimeoutError } from "../../src/smtp/input.ts";
import type { ByteStream } from "../../src/core/stream.ts";
import { duplexPair } from "../helpers/duplex.ts";

const enc = new TextEncoder();

/** Fills until a whole line is buffered and takes it. */
async function line(input: Input, max: number) {
  for (;;) {
    const got = input.takeLine(max);
    if (got) return got;
    assert.ok(await input.fill(1000), "stream ended before the line");
  }
}

Deno.test("Input starts with a small buffer, grows for a long line and gives the memory back on release()", async () => {
  const [a, b] = duplexPair();
  const input = new Input(a);
  assert.ok(input.capacity <= 1024, `an idle connection holds ${input.capacity} octets`);
  await b.write(enc.encode("NOOP\r\n"));
  assert.deepEqual(await line(input, 512), { line: "NOOP" });
  assert.ok(input.capacity <= 1024, `a short command grew the buffer to ${input.capacity}`);

  const long = "X-Long: " + "y".repeat(50_000);
  await b.write(enc.encode(long + "\r\nQUIT\r\n"));
  const got = await line(input, 100_000);
  assert.deepEqual(got, { line: long });
  assert.ok(input.capacity > long.length, `buffer of ${input.capacity} for a line of ${long.length}`);
  input.release();
  assert.ok(input.capacity <= 1024, `after release the buffer holds ${input.capacity} octets`);
  // What was buffered behind the long line survives the release.
  assert.deepEqual(input.takeLine(512), { line: "QUIT" });
  b.close();
});

Deno.test("Input.expect(): a client that sends nothing keeps a small buffer; content that comes takes two reads", async () => {
  const [a, b] = duplexPair();
  let reads = 0;
  const counted: ByteStream = {
    read: (p) => (reads++, a.read(p)),
    write: (p) => a.write(p),
    close: () => a.close(),
  };
  const input = new Input(counted);
  input.expect(16 * 1024);
  // Announced but not sent yet: the read waiting for it has no more room than before.
  const first = input.fill(5000);
  assert.ok(input.capacity <= 1024, `waiting with ${input.capacity} octets`);
  const content = new Uint8Array(10_300).fill(0x61);
  await b.write(content);
  assert.ok(await first);
  // The first read took what its small buffer held; the next takes the rest at once.
  while (input.pending < content.length) assert.ok(await input.fill(1000));
  assert.equal(reads, 2);
  input.advance(input.pending);
  input.release();
  assert.ok(input.capacity <= 1024, `after release the buffer holds ${input.capacity} octets`);
  // Without expect(), the same content takes reads that start at 1 KiB and double.
  await b.write(content);
  reads = 0;
  while (input.pending < content.length) assert.ok(await input.fill(1000));
  assert.ok(reads >= 4, `${reads} reads`);
  b.close();
});

Deno.test("Input.release() keeps a large pending remainder instead of truncating it", async () => {
  const [a, b] = duplexPair();
  const input = new Input(a);
  const big = "z".repeat(5000);
  await b.write(enc.encode(big));
  while (input.pending < big.length) assert.ok(await input.fill(1000));
  input.release();
  assert.equal(new TextDecoder().decode(input.peek()), big);
  b.close();
});

Deno.test("Input.fill() treats a reset connection as the end of input and says it was lost", async () => {
  const reset: ByteStream = {
    read: () => Promise.reject(new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)")),
    write: (p) => Promise.resolve(p.length),
    close: () => {},
  };
  const input = new Input(reset);
  assert.equal(await input.fill(1000), false);
  assert.equal(input.eof, true);
  assert.equal(input.lost, true);
});

Deno.test("Input.fill() with no time left throws ReadTimeoutError without reading", async () => {
  const [a, b] = duplexPair();
  await b.write(enc.encode("NOOP\r\n"));
  const input = new Input(a);
  await assert.rejects(input.fill(0), ReadTimeoutError);
  assert.equal(input.pending, 0);
  b.close();
});
