import assert from "node:assert/strict";
import { parseReplies, ReplySyntaxError, replyText } from "../../src/smtp/reply_parser.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("parseReplies() reads a single-line reply with an enhanced code", () => {
  const { replies, leftover } = parseReplies(enc("250 2.1.5 Ok\r\n"));
  assert.deepEqual(replies, [{ code: 250, enhanced: "2.1.5", lines: ["Ok"] }]);
  assert.equal(leftover.length, 0);
});

Deno.test("parseReplies() joins a multi-line reply and strips the enhanced code from each line", () => {
  const { replies } = parseReplies(enc("550-5.1.1 No such\r\n550-5.1.1 user\r\n550 5.1.1 here\r\n"));
  assert.deepEqual(replies, [{ code: 550, enhanced: "5.1.1", lines: ["No such", "user", "here"] }]);
  assert.equal(replyText(replies[0]), "550 5.1.1 No such user here");
});

Deno.test("parseReplies() keeps an incomplete multi-line reply as leftover and resumes", () => {
  const first = parseReplies(enc("250 Ok\r\n250-smtp\r\n250-PIPEL"));
  assert.equal(first.replies.length, 1);
  assert.equal(dec(first.leftover), "250-smtp\r\n250-PIPEL");
  const joined = new Uint8Array([...first.leftover, ...enc("INING\r\n250 SIZE 1000\r\n")]);
  const second = parseReplies(joined);
  assert.deepEqual(second.replies, [{ code: 250, lines: ["smtp", "PIPELINING", "SIZE 1000"] }]);
  assert.equal(second.leftover.length, 0);
});

Deno.test("parseReplies() returns several pipelined replies in order", () => {
  const { replies } = parseReplies(enc("250 2.1.0 Ok\r\n550 5.1.1 No\r\n354 Go ahead\r\n"));
  assert.deepEqual(replies.map((r) => r.code), [250, 550, 354]);
  assert.equal(replies[2].enhanced, undefined);
});

Deno.test("parseReplies() accepts a bare code and a code followed by one space", () => {
  const { replies } = parseReplies(enc("250-smtp-sink\r\n250 \r\n221\r\n"));
  assert.deepEqual(replies, [{ code: 250, lines: ["smtp-sink", ""] }, { code: 221, lines: [""] }]);
});

Deno.test("parseReplies() ignores an enhanced code whose class differs from the reply code", () => {
  const { replies } = parseReplies(enc("250 5.1.1 odd\r\n"));
  assert.deepEqual(replies, [{ code: 250, lines: ["5.1.1 odd"] }]);
});

Deno.test("parseReplies() tolerates bare LF line ends", () => {
  const { replies } = parseReplies(enc("220 hi\n"));
  assert.deepEqual(replies, [{ code: 220, lines: ["hi"] }]);
});

Deno.test("parseReplies() rejects garbled lines", () => {
  for (
    const bad of ["25O Ok\r\n", "hello\r\n", "2500 Ok\r\n", "250_Ok\r\n", "650 Ok\r\n", "\r\n", "25\r\n"]
  ) {
    assert.throws(() => parseReplies(enc(bad)), ReplySyntaxError, bad);
  }
});

Deno.test("parseReplies() rejects a multi-line reply whose codes disagree", () => {
  assert.throws(() => parseReplies(enc("250-first\r\n550 second\r\n")), /changes code from 250 to 550/);
});

Deno.test("parseReplies() rejects overlong lines, complete or not", () => {
  const long = "250 " + "x".repeat(5000);
  assert.throws(() => parseReplies(enc(long + "\r\n")), /too long/);
  assert.throws(() => parseReplies(enc(long)), /too long/);
  assert.equal(parseReplies(enc(long + "\r\n"), { maxLineLength: 10_000 }).replies.length, 1);
});

Deno.test("parseReplies() rejects a multi-line reply with too many lines", () => {
  const text = "250-x\r\n".repeat(20) + "250 end\r\n";
  assert.throws(() => parseReplies(enc(text), { maxLines: 10 }), /too long/);
});
