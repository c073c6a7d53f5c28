import assert from "node:assert/strict";
import { utf8Length } from "../../src/core/utf8.ts";
import { seededRandom } from "../helpers/random.ts";

Deno.test("utf8Length() agrees with TextEncoder on ASCII, 2-, 3- and 4-octet characters and lone surrogates", () => {
  const enc = new TextEncoder();
  const units = [0x41, 0x7f, 0x80, 0x7ff, 0x800, 0xe9, 0x4e2d, 0xffff, 0xd83d, 0xde00, 0xdbff, 0xdc00, 0x20];
  const random = seededRandom(11);
  for (let t = 0; t < 5000; t++) {
    const text = String.fromCharCode(
      ...Array.from({ length: Math.floor(random() * 12) }, () => units[Math.floor(random() * units.length)]),
    );
    assert.equal(utf8Length(text), enc.encode(text).length, JSON.stringify(text));
  }
  assert.equal(utf8Length("user@例え.jp"), enc.encode("user@例え.jp").length);
  assert.equal(utf8Length("😀"), 4);
});
