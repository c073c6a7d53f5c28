import assert from "node:assert/strict";
import { headerEnd, parseHeaders } from "../../src/core/headers.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("parseHeaders() keeps order, raw names, and trims values", () => {
  const fields = parseHeaders(
    enc("From: a@b\r\nSUBJECT:  Hi there \r\nX-Empty:\r\nto: c@d\r\n\r\nBody: no\r\n"),
  );
  assert.deepEqual(fields, [
    { name: "From", value: "a@b" },
    { name: "SUBJECT", value: "Hi there" },
    { name: "X-Empty", value: "" },
    { name: "to", value: "c@d" },
  ]);
});

Deno.test("parseHeaders() unfolds continuation lines starting with space or tab", () => {
  const fields = parseHeaders(
    enc("Subject: one\r\n two\r\n\tthree\r\nReceived: from x\r\n    by y\r\n\r\nbody\r\n"),
  );
  assert.deepEqual(fields, [
    { name: "Subject", value: "one two three" },
    { name: "Received", value: "from x by y" },
  ]);
});

Deno.test("parseHeaders() accepts bare LF line endings", () => {
  assert.deepEqual(parseHeaders(enc("A: 1\n folded\nB: 2\n\nC: body\n")), [
    { name: "A", value: "1 folded" },
    { name: "B", value: "2" },
  ]);
});

Deno.test("parseHeaders() stops at the first line that is not a field", () => {
  assert.deepEqual(parseHeaders(enc("A: 1\r\nnot a header\r\nB: 2\r\n\r\n")), [{ name: "A", value: "1" }]);
  assert.deepEqual(parseHeaders(enc(": no name\r\nA: 1\r\n\r\n")), []);
  assert.deepEqual(parseHeaders(enc("Bad Name: x\r\n\r\n")), []);
  assert.deepEqual(parseHeaders(enc(" leading fold\r\nA: 1\r\n\r\n")), []);
  // A space before the colon is tolerated and not part of the name.
  assert.deepEqual(parseHeaders(enc("Subject : x\r\n\r\n")), [{ name: "Subject", value: "x" }]);
});

Deno.test("parseHeaders() handles a message without body or without headers", () => {
  assert.deepEqual(parseHeaders(enc("A: 1\r\nB: 2")), [{ name: "A", value: "1" }, { name: "B", value: "2" }]);
  assert.deepEqual(parseHeaders(enc("\r\nA: body\r\n")), []);
  assert.deepEqual(parseHeaders(new Uint8Array(0)), []);
});

Deno.test("headerEnd() points just past the blank line", () => {
  const crlf = enc("A: 1\r\nB: 2\r\n\r\nbody");
  assert.equal(new TextDecoder().decode(crlf.subarray(headerEnd(crlf))), "body");
  const lf = enc("A: 1\n\nbody");
  assert.equal(new TextDecoder().decode(lf.subarray(headerEnd(lf))), "body");
  const noHeaders = enc("\r\nA: body\r\n\r\nmore");
  assert.equal(headerEnd(noHeaders), 2);
  assert.equal(headerEnd(enc("\nbody")), 1);
  const none = enc("A: 1\r\nB: 2\r\n");
  assert.equal(headerEnd(none), none.length);
});
