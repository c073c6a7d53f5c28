import assert from "node:assert/strict";
import { DATA_TERMINATOR, encodeDataPieces } from "../../src/smtp/dot_stuff.ts";
import { concatBytes } from "../../src/core/bytes.ts";
import { seededRandom } from "../helpers/random.ts";

/** The whole DATA payload from encodeDataPieces(), each piece copied out before the next overwrites it. */
function encodeData(data: Uint8Array): Uint8Array {
  return concatBytes(Array.from(encodeDataPieces(data), (piece) => piece.slice()));
}

/** The payload without the terminator. */
function dotStuff(data: Uint8Array): Uint8Array {
  const all = encodeData(data);
  return all.subarray(0, all.length - DATA_TERMINATOR.length);
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("dotStuff() doubles a dot at the start of every line, not elsewhere", () => {
  assert.equal(
    dec(dotStuff(enc(".first\r\nmid.dle\r\n.\r\n..two\r\n"))),
    "..first\r\nmid.dle\r\n..\r\n...two\r\n",
  );
});

Deno.test("dotStuff() adds a final CRLF when missing and leaves an empty message empty", () => {
  assert.equal(dec(dotStuff(enc("a\r\nb"))), "a\r\nb\r\n");
  assert.equal(dec(dotStuff(enc("a\r\n"))), "a\r\n");
  assert.equal(dotStuff(new Uint8Array(0)).length, 0);
});

Deno.test("dotStuff() sends bare LF and bare CR as CRLF so no smuggled end-of-data survives", () => {
  assert.equal(dec(dotStuff(enc("a\n.\nb\r.\rc\r\n"))), "a\r\n..\r\nb\r\n..\r\nc\r\n");
  const wire = dec(encodeData(enc("x\n.\r\nMAIL FROM:<evil>\r\n")));
  assert.equal(wire.indexOf("\r\n.\r\n"), wire.length - 5);
});

Deno.test("encodeData() ends with the terminator and keeps 8-bit bytes untouched", () => {
  const data = new Uint8Array([0xc3, 0xa9, 0x2e, 0x0d, 0x0a, 0x2e, 0xff]);
  assert.deepEqual([...encodeData(data)], [
    0xc3,
    0xa9,
    0x2e,
    0x0d,
    0x0a,
    0x2e,
    0x2e,
    0xff,
    0x0d,
    0x0a,
    0x2e,
    0x0d,
    0x0a,
  ]);
  assert.equal(dec(encodeData(new Uint8Array(0))), ".\r\n");
});

Deno.test("encodeDataPieces() joined equals encodeData() for every piece size, CRLF and dots split across pieces", () => {
  const samples = [
    "",
    "a",
    ".",
    "a\r\n",
    ".a\r\n.\r\n..b\r\nc",
    "x\r\n.y\r\n\r\n.\r\nz\r\r\n\n.\r.",
    "line one\r\n.dot\nbare\rcr\r\n" + "é.\r\n".repeat(50),
  ];
  for (const text of samples) {
    const data = enc(text);
    for (const size of [1, 2, 3, 5, 64, 1 << 16]) {
      // Each piece is only valid until the next is made: copy them as a writer would send them.
      const parts = Array.from(encodeDataPieces(data, size), (p) => p.slice());
      assert.deepEqual(concatBytes(parts), encodeData(data), `${JSON.stringify(text)} in pieces of ${size}`);
      assert.ok(parts.every((p) => p.length <= size * 2 + 5), "a piece is bounded by its input");
    }
  }
});

/** Octet-at-a-time statement of the rules, for comparison: a line-start dot doubled, every line end CRLF. */
function reference(data: Uint8Array): number[] {
  const out: number[] = [];
  let lineStart = true;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    if (b === 0x0d || b === 0x0a) {
      out.push(0x0d, 0x0a);
      if (b === 0x0d && data[i + 1] === 0x0a) i++;
      lineStart = true;
      continue;
    }
    if (lineStart && b === 0x2e) out.push(0x2e);
    out.push(b);
    lineStart = false;
  }
  if (!lineStart) out.push(0x0d, 0x0a);
  return [...out, ...DATA_TERMINATOR];
}

Deno.test("encodeDataPieces() equals the octet-at-a-time rules on random input, in random piece sizes and alignments", () => {
  // Mostly CR, LF and dots, so line ends, CRLFs split across pieces and line-start dots come up often.
  const alphabet = [0x0d, 0x0a, 0x2e, 0x2e, 0x41, 0x20, 0x00, 0xff];
  const random = seededRandom(42);
  const rand = (n: number) => Math.floor(random() * n);
  for (let round = 0; round < 2000; round++) {
    // A view at any offset of its buffer: the four-octet reads must not depend on alignment.
    const at = rand(8);
    const data = new Uint8Array(at + rand(80) + rand(8)).subarray(at, at + rand(80));
    const runs = rand(3) === 0;
    for (let i = 0; i < data.length; i++) {
      data[i] = runs && rand(4) !== 0 ? 0x61 + rand(26) : alphabet[rand(alphabet.length)];
    }
    const size = 1 + (rand(2) === 0 ? rand(12) : rand(100));
    const parts = Array.from(encodeDataPieces(data, size), (p) => [...p]);
    assert.deepEqual(parts.flat(), reference(data), `${JSON.stringify([...data])} in pieces of ${size}`);
  }
});
