import assert from "node:assert/strict";
import { oneLine } from "../../src/core/one_line.ts";

Deno.test("oneLine() unfolds line breaks and turns every other control into a space", () => {
  assert.equal(oneLine("go\r\naway"), "go away");
  assert.equal(oneLine("Yes, score=9\r\n\tsymbols=A\n    B"), "Yes, score=9 symbols=A B", "folded header");
  assert.equal(oneLine("a\x00b\x7fc\td"), "a b c d");
  assert.equal(oneLine("\r\n  mailbox moved \r\n"), "mailbox moved");
  assert.equal(oneLine(" \t\r\n "), "");
  assert.equal(oneLine("plain text, kept as is"), "plain text, kept as is");
});
