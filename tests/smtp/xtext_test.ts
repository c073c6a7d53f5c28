import assert from "node:assert/strict";
import { decodeXtext, encodeXtext } from "../../src/smtp/xtext.ts";

Deno.test("decodeXtext() decodes +XX hex pairs and passes printable ASCII through", () => {
  assert.equal(decodeXtext("a+2Bb@x"), "a+b@x");
  assert.equal(decodeXtext("plain"), "plain");
  assert.equal(decodeXtext(""), "");
  assert.equal(decodeXtext("+3D+20+2B"), "= +");
  assert.equal(decodeXtext("caf+C3+A9"), "café");
});

Deno.test("decodeXtext() refuses malformed xtext", () => {
  for (
    const bad of [
      "+2g",
      "+2b",
      "+",
      "abc+",
      "abc+4",
      "a b",
      "a=b",
      "tab\there",
      "caf\u00e9",
      "\x7f",
      "+C3",
      "+FF",
    ]
  ) {
    assert.equal(decodeXtext(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("encodeXtext() encodes +, =, space, controls and UTF-8 octets", () => {
  assert.equal(encodeXtext("a+b=c d"), "a+2Bb+3Dc+20d");
  assert.equal(encodeXtext("café"), "caf+C3+A9");
  assert.equal(encodeXtext("\r\n"), "+0D+0A");
  assert.equal(encodeXtext("user@example.test"), "user@example.test");
});

Deno.test("encodeXtext() and decodeXtext() round-trip", () => {
  for (const s of ["", "a+b", "=== ", "ünïcödé@bücher.example", "~!#$%^&*()", "\x01\x7f"]) {
    assert.equal(decodeXtext(encodeXtext(s)), s, JSON.stringify(s));
  }
});
