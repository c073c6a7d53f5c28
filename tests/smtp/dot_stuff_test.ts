import assert from "node:assert/strict";
import { DATA_TERMINATOR, encodeDataPieces } from "../../src/smtp/dot_stuff.ts";

/** The whole DATA payload from encodeDataPieces(), each piece copied out before the next overwrites it. */
function encodeData(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length * 2 + 2 + DATA_TERMINATOR.length);
  let at = 0;
  for (const piece of encodeDataPieces(data)) {
    out.set(piece, at);
    at += piece.length;
  }
  return out.slice(0, at);
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
  const join = (parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  for (const text of samples) {
    const data = enc(text);
    for (const size of [1, 2, 3, 5, 64, 1 << 16]) {
      // Each piece is only valid until the next is made: copy them as a writer would send them.
      const parts = Array.from(encodeDataPieces(data, size), (p) => p.slice());
      assert.deepEqual(join(parts), encodeData(data), `${JSON.stringify(text)} in pieces of ${size}`);
      assert.ok(parts.every((p) => p.length <= size * 2 + 5), "a piece is bounded by its input");
    }
  }
});
