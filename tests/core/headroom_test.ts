import assert from "node:assert/strict";
import { prependInPlace, withHeadroom } from "../../src/core/headroom.ts";
import { DataScanner } from "../../src/smtp/data_scanner.ts";
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
