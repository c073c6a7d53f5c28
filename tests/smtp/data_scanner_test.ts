import assert from "node:assert/strict";
import { type BareLineEndings, DataMemory, DataScanner } from "../../src/smtp/data_scanner.ts";
import { seededRandom } from "../helpers/random.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function scanner(
  opts: Partial<{ maxSize: number; maxLine: number; bare: BareLineEndings; mode: "data" | "bdat" }> = {},
) {
  return new DataScanner({
    maxSize: opts.maxSize ?? 1024 * 1024,
    maxLine: opts.maxLine ?? 1000,
    bareLineEndings: opts.bare ?? "reject",
    mode: opts.mode ?? "data",
  });
}

/** Feeds a whole string; returns the scanner, whether it ended, and how much was consumed. */
function feedAll(text: string | Uint8Array, s = scanner()) {
  const bytes = typeof text === "string" ? enc(text) : text;
  const r = s.feed(bytes);
  return { s, ...r, rest: dec(bytes.subarray(r.consumed)) };
}

Deno.test("DataScanner ends only at CRLF.CRLF and keeps what follows unconsumed", () => {
  const { s, ended, rest } = feedAll("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
  assert.equal(ended, true);
  assert.equal(dec(s.data()), "Subject: x\r\n\r\nbody\r\n");
  assert.equal(rest, "QUIT\r\n");
  assert.equal(s.bareLineEnding, false);
  assert.equal(s.size, s.data().length);
});

Deno.test("DataScanner treats a dot line right after DATA as the end of an empty message", () => {
  const { s, ended, consumed } = feedAll(".\r\n");
  assert.equal(ended, true);
  assert.equal(consumed, 3);
  assert.equal(s.data().length, 0);
});

Deno.test("DataScanner removes one leading dot (RFC 5321 4.5.2), not dots elsewhere", () => {
  const { s, ended } = feedAll("..hidden\r\n...two\r\na.b.\r\n.x\r\n..\r\n.\r\n");
  assert.equal(ended, true);
  assert.equal(dec(s.data()), ".hidden\r\n..two\r\na.b.\r\nx\r\n.\r\n");
});

Deno.test("DataScanner does not end without the final CRLF.CRLF", () => {
  for (const text of ["body\r\n.", "body\r\n.\r", "body.\r\n", "body\r\n\r\n", "x\r\n. \r\n"]) {
    const { ended, consumed } = feedAll(text);
    assert.equal(ended, false, JSON.stringify(text));
    assert.equal(consumed, enc(text).length);
  }
});

const SMUGGLING: [string, string][] = [
  ["LF.LF", "\n.\n"],
  ["LF.CRLF", "\n.\r\n"],
  ["CR.CR", "\r.\r"],
  ["CRLF.CR", "\r\n.\r"],
  ["CR.CRLF", "\r.\r\n"],
  ["CRLF.LF", "\r\n.\n"],
  ["LF.CR", "\n.\r"],
];

for (const [name, fake] of SMUGGLING) {
  Deno.test(`DataScanner: smuggled ${name} does not end the message and marks a bare line ending`, () => {
    const text =
      `Subject: a\r\n\r\nhello${fake}MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n`;
    const s = scanner();
    const first = s.feed(enc(text));
    assert.equal(first.ended, false);
    assert.equal(first.consumed, enc(text).length);
    assert.equal(s.bareLineEnding, true);
    const last = s.feed(enc("tail\r\n.\r\nNEXT"));
    assert.equal(last.ended, true);
    assert.equal(last.consumed, enc("tail\r\n.\r\n").length);
    const content = dec(s.data());
    assert.ok(
      content.includes("MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\ntail\r\n"),
      JSON.stringify(content),
    );
    assert.ok(content.startsWith("Subject: a\r\n\r\nhello"));
  });

  Deno.test(`DataScanner: smuggled ${name} in normalize mode becomes CRLF line endings only`, () => {
    const s = scanner({ bare: "normalize" });
    const r = s.feed(enc(`a${fake}MAIL FROM:<e@x.test>\r\n.\r\n`));
    assert.equal(r.ended, true);
    assert.equal(s.bareLineEnding, true);
    const content = s.data();
    // No bare CR or LF is left: every CR is followed by LF and every LF preceded by CR.
    for (let i = 0; i < content.length; i++) {
      if (content[i] === 0x0d) {
        assert.equal(content[i + 1], 0x0a, `bare CR at ${i} in ${JSON.stringify(dec(content))}`);
      }
      if (content[i] === 0x0a) {
        assert.equal(content[i - 1], 0x0d, `bare LF at ${i} in ${JSON.stringify(dec(content))}`);
      }
    }
    assert.ok(dec(content).includes("MAIL FROM:<e@x.test>\r\n"));
  });
}

Deno.test("DataScanner in reject mode keeps bare CR and LF as they came", () => {
  const { s, ended } = feedAll("a\nb\rc\r\n.\r\n");
  assert.equal(ended, true);
  assert.equal(s.bareLineEnding, true);
  assert.equal(dec(s.data()), "a\nb\rc\r\n");
});

Deno.test("DataScanner in normalize mode turns bare CR and bare LF into CRLF", () => {
  const { s, ended } = feedAll("a\nb\rc\r\nd\n\ne\r\n.\r\n", scanner({ bare: "normalize" }));
  assert.equal(ended, true);
  assert.equal(s.bareLineEnding, true);
  assert.equal(dec(s.data()), "a\r\nb\r\nc\r\nd\r\n\r\ne\r\n");
});

Deno.test("DataScanner keeps 8-bit and NUL bytes untouched", () => {
  const body = new Uint8Array([0x00, 0xff, 0xc3, 0xa9, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a]);
  const s = scanner();
  assert.equal(s.feed(body).ended, true);
  assert.deepEqual([...s.data()], [0x00, 0xff, 0xc3, 0xa9, 0x0d, 0x0a]);
});

/** A small seeded PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

/** Feeds `bytes` in the given pieces; returns the final state. */
function feedSplit(bytes: Uint8Array, cuts: number[], make: () => DataScanner) {
  const s = make();
  let pos = 0;
  let endedAt = -1;
  const bounds = [...cuts, bytes.length];
  for (const cut of bounds) {
    while (pos < cut && endedAt < 0) {
      const r = s.feed(bytes.subarray(pos, cut));
      pos += r.consumed;
      if (r.ended) endedAt = pos;
      if (r.consumed === 0) break;
    }
    if (endedAt >= 0) break;
  }
  // Past maxSize the message is refused, so only how much was kept matters, not which bytes.
  assert.ok(s.data().length <= s.size);
  return {
    data: s.tooBig ? "too big" : [...s.data()],
    endedAt,
    size: s.size,
    bare: s.bareLineEnding,
    long: s.lineTooLong,
    big: s.tooBig,
  };
}

Deno.test("DataScanner gives the same result fed byte by byte, at once, or in random pieces", () => {
  const alphabet = ["\r", "\n", ".", "a", "\r\n", "\r\n.", "\r\n.\r\n", "..", "x", "\xe9"];
  const random = rng(20261122);
  for (let round = 0; round < 400; round++) {
    let text = "";
    const len = 1 + Math.floor(random() * 40);
    for (let i = 0; i < len; i++) text += alphabet[Math.floor(random() * alphabet.length)];
    const bytes = enc(text);
    for (const bare of ["reject", "normalize"] as const) {
      for (const mode of ["data", "bdat"] as const) {
        const make = () => scanner({ bare, mode, maxLine: 12, maxSize: round % 2 ? 30 : 1000 });
        const whole = feedSplit(bytes, [], make);
        const single = feedSplit(bytes, Array.from({ length: bytes.length }, (_, i) => i), make);
        const cuts: number[] = [];
        for (let i = 1; i < bytes.length; i++) if (random() < 0.3) cuts.push(i);
        const pieces = feedSplit(bytes, cuts, make);
        const label = `${JSON.stringify(text)} ${bare} ${mode} cuts=${cuts}`;
        assert.deepEqual(single, whole, label);
        assert.deepEqual(pieces, whole, label);
        if (whole.big) assert.ok(whole.size > 30);
      }
    }
  }
});

Deno.test("DataScanner counts but does not keep content past maxSize", () => {
  const s = scanner({ maxSize: 10 });
  const r = s.feed(enc("0123456789\r\n0123456789\r\n.\r\n"));
  assert.equal(r.ended, true);
  assert.equal(s.tooBig, true);
  assert.equal(s.size, 24);
  assert.ok(s.data().length <= 10, `kept ${s.data().length}`);
  const exact = scanner({ maxSize: 12 });
  exact.feed(enc("0123456789\r\n.\r\n"));
  assert.equal(exact.tooBig, false);
  assert.equal(dec(exact.data()), "0123456789\r\n");
});

Deno.test("DataScanner keeps large content across buffer growth", () => {
  const line = "x".repeat(998) + "\r\n";
  const s = scanner({ maxSize: 10_000_000 });
  for (let i = 0; i < 100; i++) assert.equal(s.feed(enc(line)).ended, false);
  assert.equal(s.feed(enc(".\r\n")).ended, true);
  assert.equal(s.data().length, 100_000);
  assert.equal(dec(s.data().subarray(99_000)), line);
  assert.equal(s.lineTooLong, false);
});

Deno.test("DataScanner flags a line longer than maxLine, CRLF included", () => {
  const ok = scanner({ maxLine: 10 });
  ok.feed(enc("12345678\r\n.\r\n"));
  assert.equal(ok.lineTooLong, false);
  const long = scanner({ maxLine: 10 });
  long.feed(enc("123456789\r\nshort\r\n.\r\n"));
  assert.equal(long.lineTooLong, true);
  assert.equal(dec(long.data()), "123456789\r\nshort\r\n");
  // RFC 5321 4.5.3.1.6: the dot added for transparency does not count towards the line's length.
  const stuffed = scanner({ maxLine: 10 });
  stuffed.feed(enc("..2345678\r\n.\r\n"));
  assert.equal(stuffed.lineTooLong, false);
  assert.equal(dec(stuffed.data()), ".2345678\r\n");
  const stuffedLong = scanner({ maxLine: 10 });
  stuffedLong.feed(enc("..23456789\r\n.\r\n"));
  assert.equal(stuffedLong.lineTooLong, true);
  // Also when the line arrives in pieces, the dot in a piece of its own.
  const stuffedPieces = scanner({ maxLine: 10 });
  for (const c of [".", ".234", "5678", "\r", "\n.\r\n"]) stuffedPieces.feed(enc(c));
  assert.equal(stuffedPieces.lineTooLong, false);
  assert.equal(dec(stuffedPieces.data()), ".2345678\r\n");
  // A long line in one piece or many pieces is caught alike.
  const pieces = scanner({ maxLine: 10 });
  for (const c of "abcdefghijklmnop") pieces.feed(enc(c));
  assert.equal(pieces.lineTooLong, true);
});

Deno.test("DataScanner in BDAT mode has no dot handling and no terminator", () => {
  const s = scanner({ mode: "bdat" });
  const r = s.feed(enc(".start\r\n..two\r\n.\r\nafter\r\n"));
  assert.equal(r.ended, false);
  assert.equal(r.consumed, enc(".start\r\n..two\r\n.\r\nafter\r\n").length);
  s.finish();
  assert.equal(dec(s.data()), ".start\r\n..two\r\n.\r\nafter\r\n");
  assert.equal(s.bareLineEnding, false);
});

Deno.test("DataScanner in BDAT mode joins a CR ending one chunk with an LF starting the next", () => {
  const s = scanner({ mode: "bdat" });
  s.feed(enc("line one\r"));
  s.feed(enc("\nline two\r\n"));
  s.finish();
  assert.equal(s.bareLineEnding, false);
  assert.equal(dec(s.data()), "line one\r\nline two\r\n");
});

Deno.test("DataScanner in BDAT mode: a CR at the very end of the message is bare", () => {
  const s = scanner({ mode: "bdat" });
  s.feed(enc("text\r"));
  assert.equal(s.bareLineEnding, false);
  s.finish();
  assert.equal(s.bareLineEnding, true);
  assert.equal(dec(s.data()), "text\r");
  const n = scanner({ mode: "bdat", bare: "normalize" });
  n.feed(enc("text\r"));
  n.finish();
  assert.equal(dec(n.data()), "text\r\n");
});

Deno.test("DataScanner in BDAT mode flags bare LF and bare CR", () => {
  for (const text of ["a\nb", "a\rb"]) {
    const s = scanner({ mode: "bdat" });
    s.feed(enc(text));
    s.finish();
    assert.equal(s.bareLineEnding, true, JSON.stringify(text));
  }
});

/**
 * The scanner's rules one octet at a time (RFC 5321 4.5.2 and Ferry's bare CR/LF handling), as a reference
 * for the scanner, which takes runs of whole lines at once.
 */
function referenceScan(
  bytes: Uint8Array,
  o: { maxSize: number; maxLine: number; bare: BareLineEndings; mode: "data" | "bdat" },
) {
  const kept: number[] = [];
  let size = 0, lineLen = 0, bareSeen = false, tooLong = false, tooBig = false;
  let state: "start" | "mid" | "cr" | "dot" | "dotcr" = o.mode === "data" ? "start" : "mid";
  const keep = (...b: number[]) => {
    size += b.length;
    if (size > o.maxSize) tooBig = true;
    if (!tooBig) kept.push(...b);
  };
  const count = (n: number) => {
    lineLen += n;
    if (lineLen > o.maxLine) tooLong = true;
  };
  const bare = (b: number) => {
    bareSeen = true;
    if (o.bare === "normalize") {
      keep(13, 10);
      lineLen = 0;
    } else {
      keep(b);
      lineLen++;
    }
  };
  let ended = -1;
  let i = 0;
  while (i < bytes.length && ended < 0) {
    const b = bytes[i];
    // Each branch either takes the octet (i++) or changes state and looks at it again.
    if (state === "start") {
      if (b === 0x2e && o.mode === "data") {
        state = "dot";
        i++;
      } else state = "mid";
    } else if (state === "dot") {
      if (b === 13) {
        state = "dotcr";
        i++;
      } else {
        state = "mid"; // the stuffing dot is not counted (RFC 5321 4.5.3.1.6)
      }
    } else if (state === "dotcr") {
      if (b === 10) ended = i + 1;
      else {
        bare(13);
        state = "mid";
      }
    } else if (state === "cr") {
      if (b === 10) {
        keep(13, 10);
        count(2);
        lineLen = 0;
        state = "start";
        i++;
      } else {
        bare(13);
        state = "mid";
      }
    } else {
      if (b === 13) state = "cr";
      else if (b === 10) bare(10);
      else {
        keep(b);
        count(1);
      }
      i++;
    }
  }
  if (o.mode === "bdat" && state === "cr") bare(13);
  return { ended, kept, size, bareSeen, tooLong, tooBig };
}

Deno.test("DataScanner agrees with the octet-at-a-time rules on random content cut at random places", () => {
  const random = seededRandom(7);
  const alphabets = [[0x61, 0x62, 0x2e, 13, 10, 13, 10], [
    0x61,
    0x61,
    0x61,
    0x61,
    0x2e,
    13,
    10,
    13,
    10,
    13,
    10,
  ]];
  // Long runs of ordinary octets, with octets just above and below CR and LF and from 0x80 up among them:
  // the scanner passes over four octets at a time while none is below 0x0e.
  const nearCrLf = [9, 0x0c, 0x0e, 0x0f, 0x80, 0x8a, 0x8d, 0xff, 0];
  alphabets.push([...Array(24).fill(0x61), 0x2e, 13, 10, 13, 10, ...nearCrLf]);
  for (let t = 0; t < 30_000; t++) {
    const alphabet = alphabets[t % 3];
    const bytes = new Uint8Array(Math.floor(random() * 200)).map(() =>
      alphabet[Math.floor(random() * alphabet.length)]
    );
    const o = {
      maxSize: 1 + Math.floor(random() * 250),
      maxLine: 1 + Math.floor(random() * 30),
      bare: (random() < 0.5 ? "reject" : "normalize") as BareLineEndings,
      mode: (random() < 0.7 ? "data" : "bdat") as "data" | "bdat",
    };
    const want = referenceScan(bytes, o);
    const s = scanner(o);
    let at = 0, ended = -1;
    while (at < bytes.length) {
      const piece = bytes.subarray(at, Math.min(bytes.length, at + 1 + Math.floor(random() * 40)));
      const r = s.feed(piece);
      at += r.consumed;
      if (r.ended) {
        ended = at;
        break;
      }
      assert.equal(r.consumed, piece.length);
    }
    if (o.mode === "bdat") s.finish();
    const input = JSON.stringify({ bytes: [...bytes], o });
    assert.equal(ended, want.ended, input);
    assert.equal(s.size, want.size, input);
    assert.equal(s.bareLineEnding, want.bareSeen, input);
    assert.equal(s.lineTooLong, want.tooLong, input);
    assert.equal(s.tooBig, want.tooBig, input);
    // Past maxSize the message is refused: what was kept of it does not matter.
    if (!want.tooBig) assert.deepEqual([...s.data()], want.kept, input);
  }
});

Deno.test("DataScanner reads a view that starts 2 GiB into its buffer (word indices past 32-bit shifts)", () => {
  const at = 2 ** 31;
  // A resizable buffer: the address space is reserved, and only the page written is backed by memory.
  const buffer = new ArrayBuffer(16, { maxByteLength: at + 64 });
  buffer.resize(at + 64);
  const text = new TextEncoder().encode("abcdefgh\r\nijklmnop\r\n.\r\n");
  const view = new Uint8Array(buffer, at, text.length);
  view.set(text);
  const s = scanner({ maxSize: 1000, maxLine: 1000, bare: "reject", mode: "data" });
  assert.deepEqual(s.feed(view), { consumed: text.length, ended: true });
  assert.equal(new TextDecoder().decode(s.data()), "abcdefgh\r\nijklmnop\r\n");
});

Deno.test("DataScanner keeps within limits.dataMemory: past it the content is read but not kept, and the budget frees itself", () => {
  const KiB = 1024;
  const memory = new DataMemory(500 * KiB);
  const make = (expectedSize?: number) =>
    new DataScanner({
      maxSize: 1024 * KiB,
      maxLine: 1000,
      bareLineEndings: "reject",
      mode: "data",
      expectedSize,
      memory,
    });
  const body = (n: number) => enc(("x".repeat(98) + "\r\n").repeat(n / 100));
  // A declared 300 KB takes its room at once.
  const a = make(300_000);
  assert.ok(memory.used() >= 300_000, String(memory.used()));
  // Another declared 200 KB does not fit: read to the end, nothing kept, and A is untouched.
  const b = make(200_000);
  assert.equal(b.overMemory, true);
  assert.equal(b.feed(body(200_000)).ended, false);
  assert.equal(b.feed(enc(".\r\n")).ended, true);
  assert.equal(b.data().length, 0);
  assert.equal(b.size, 200_000, "the size is still counted");
  // Without SIZE= a message grows until the budget stops it; what it had kept is let go at once.
  const c = make();
  c.feed(body(90_000));
  assert.equal(c.overMemory, false, "90 KB fit beside A");
  const before = memory.used();
  c.feed(body(200_000));
  assert.equal(c.overMemory, true);
  assert.equal(c.data().length, 0);
  assert.ok(memory.used() < before, `${memory.used()} < ${before}: C's buffer no longer counts`);
  // A finishes and its buffer moves to the spool's thread (transferred): it no longer counts either.
  a.feed(body(300_000));
  a.feed(enc(".\r\n"));
  assert.equal(a.data().length, 300_000);
  assert.equal(a.overMemory, false);
  structuredClone(a.data(), { transfer: [a.data().buffer] });
  assert.equal(memory.used(), 0);
  const d = make(300_000);
  d.feed(body(300_000));
  d.feed(enc(".\r\n"));
  assert.equal(d.overMemory, false);
  assert.equal(d.data().length, 300_000);
  // The session is done with D (stored by copy, or refused): it no longer counts, though its data is intact.
  assert.ok(memory.used() >= 300_000);
  d.finished();
  assert.equal(memory.used(), 0);
  assert.equal(d.data().length, 300_000);
});
