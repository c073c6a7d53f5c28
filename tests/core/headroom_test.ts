import assert from "node:assert/strict";
import { growInPlace, prependInPlace, withHeadroom } from "../../src/core/headroom.ts";
import { DataScanner, HEADROOM } from "../../src/smtp/data_scanner.ts";
import { HeaderEdits } from "../../src/core/header_edit.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("prependInPlace() writes the prefix into the room before the view, once, without copying it", () => {
  const view = withHeadroom(5, 16);
  view.set(enc.encode("hello"));
  const out = prependInPlace(view, enc.encode("Hi: "))!;
  assert.equal(dec.decode(out), "Hi: hello");
  assert.equal(out.buffer, view.buffer, "same buffer: the message was not copied");
  assert.equal(prependInPlace(view, enc.encode("x")), undefined, "the room is used once");
  assert.equal(prependInPlace(withHeadroom(1, 2), enc.encode("too long")), undefined);
  assert.equal(prependInPlace(enc.encode("plain"), enc.encode("x")), undefined, "no room known");
});

for (const expectedSize of [undefined, 200_000, 100_000]) {
  Deno.test(`DataScanner keeps the message in a buffer with headroom (declared size ${expectedSize})`, () => {
    const s = new DataScanner({
      maxSize: 1_000_000,
      maxLine: 1000,
      bareLineEndings: "reject",
      mode: "data",
      expectedSize,
    });
    const text = "Subject: x\r\n\r\n" + "line of a large message\r\n".repeat(6000);
    s.feed(enc.encode(text + ".\r\n"));
    const data = s.data();
    assert.equal(dec.decode(data), text);
    // The Received: prefix goes in front without a copy of the message.
    const stored = new HeaderEdits().apply(data, "Received: by test\r\n");
    assert.equal(dec.decode(stored), "Received: by test\r\n" + text);
    assert.equal(stored.buffer, data.buffer);
  });
}

Deno.test("DataScanner leaves room in front of a small message too, also after it outgrew its first buffer", () => {
  for (const lines of [10, 2000]) {
    const s = new DataScanner({ maxSize: 1_000_000, maxLine: 1000, bareLineEndings: "reject", mode: "data" });
    const text = "Subject: x\r\n\r\n" + "line of a small message\r\n".repeat(lines);
    s.feed(enc.encode(text + ".\r\n"));
    const data = s.data();
    const stored = new HeaderEdits().apply(data, "Received: by test\r\n");
    assert.equal(dec.decode(stored), "Received: by test\r\n" + text);
    assert.equal(stored.buffer, data.buffer, `${data.length} octets: prefix put in front without a copy`);
    // A prefix longer than the room still works, as a copy.
    const long = "X-Long: " + "y".repeat(5000) + "\r\n";
    const copied = new HeaderEdits().apply(data, long);
    assert.equal(dec.decode(copied), long + text);
  }
});

Deno.test("growInPlace() grows a view in its own buffer: same buffer, content and room kept, up to maxLength", () => {
  const view = withHeadroom(5, 16, 1000);
  view.set(enc.encode("hello"));
  const grown = growInPlace(view, 800)!;
  assert.equal(grown.buffer, view.buffer, "grown in place, not copied");
  assert.equal(grown.length, 800);
  assert.equal(dec.decode(grown.subarray(0, 5)), "hello");
  assert.ok(grown.subarray(5).every((b) => b === 0), "the new octets are zero");
  assert.equal(growInPlace(grown, 1001), undefined, "not past maxLength");
  assert.equal(growInPlace(withHeadroom(5, 16), 6), undefined, "a buffer made without maxLength cannot grow");
  grown.set(enc.encode(" world"), 5);
  const out = prependInPlace(grown.subarray(0, 11), enc.encode("Hi: "))!;
  assert.equal(dec.decode(out), "Hi: hello world", "the room in front is still there");
  assert.equal(out.buffer, view.buffer);
});

// What a client declares with SIZE= is an estimate: a message that outgrows it, or declares nothing, must
// still be kept once (bench:memory: a 48 MB message sent 0.4 MB past its SIZE was joined into a second copy).
for (const expectedSize of [undefined, 100_000]) {
  Deno.test(`DataScanner never copies a large message to grow it (declared size ${expectedSize})`, () => {
    const s = new DataScanner({
      maxSize: 2_000_000,
      maxLine: 1000,
      bareLineEndings: "reject",
      mode: "data",
      expectedSize,
    });
    const line = "line of a message that grows past what it declared\r\n";
    const head = "Subject: x\r\n\r\n" + line.repeat(1500);
    s.feed(enc.encode(head));
    const first = s.data().buffer;
    const rest = line.repeat(20_000);
    for (let at = 0; at < rest.length; at += 65_536) s.feed(enc.encode(rest.slice(at, at + 65_536)));
    assert.equal(s.feed(enc.encode(".\r\n")).ended, true);
    const data = s.data();
    assert.equal(data.length, head.length + rest.length);
    assert.equal(dec.decode(data), head + rest);
    assert.equal(data.buffer, first, "the buffer the message started in holds all of it");
    assert.equal(data.byteOffset, HEADROOM);
    const stored = new HeaderEdits().apply(data, "Received: by test\r\n");
    assert.equal(stored.buffer, first, "and the Received: prefix goes in front without a copy");
    assert.equal(dec.decode(stored.subarray(0, 31)), "Received: by test\r\nSubject: x\r\n");
  });
}
