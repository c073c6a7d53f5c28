import assert from "node:assert/strict";
import { SmtpError } from "../../src/core/reply.ts";
import { parseEnvid, parseNotify, parseOrcpt, parseRet } from "../../src/smtp/dsn_params.ts";

function throws501(fn: () => unknown, label: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SmtpError, `${label}: ${e}`);
    assert.equal(e.code, 501, label);
    assert.equal(e.enhanced, "5.5.4", label);
    return true;
  });
}

Deno.test("parseNotify() accepts NEVER alone or any mix of SUCCESS, FAILURE, DELAY", () => {
  assert.deepEqual(parseNotify("NEVER"), ["NEVER"]);
  assert.deepEqual(parseNotify("never"), ["NEVER"]);
  assert.deepEqual(parseNotify("SUCCESS"), ["SUCCESS"]);
  assert.deepEqual(parseNotify("FAILURE,DELAY"), ["FAILURE", "DELAY"]);
  assert.deepEqual(parseNotify("success,Failure,DELAY"), ["SUCCESS", "FAILURE", "DELAY"]);
});

Deno.test("parseNotify() refuses NEVER with others, duplicates, bad or empty keywords (501 5.5.4)", () => {
  for (
    const bad of [
      "NEVER,SUCCESS",
      "FAILURE,NEVER",
      "SUCCESS,SUCCESS",
      "NEVER,NEVER",
      "FAILURE,failure",
      "SOMETIMES",
      "SUCCESS,",
      ",SUCCESS",
      "SUCCESS;FAILURE",
      "SUCCESS FAILURE",
      "",
      undefined,
    ]
  ) {
    throws501(() => parseNotify(bad), JSON.stringify(bad));
  }
});

Deno.test("parseOrcpt() decodes the xtext address and keeps the type as given", () => {
  assert.deepEqual(parseOrcpt("rfc822;a+2Bb@x"), { type: "rfc822", address: "a+b@x" });
  assert.deepEqual(parseOrcpt("RFC822;user@example.test"), { type: "RFC822", address: "user@example.test" });
  assert.deepEqual(parseOrcpt("rfc822;a+3Db;c"), { type: "rfc822", address: "a=b;c" });
  assert.deepEqual(parseOrcpt("x-local;+20x"), { type: "x-local", address: " x" });
  // utf-8 address type (RFC 6533) is taken as is.
  assert.deepEqual(parseOrcpt("utf-8;jörg@example.test"), { type: "utf-8", address: "jörg@example.test" });
  assert.deepEqual(parseOrcpt("utf-8;j\\x{00F6}rg@example.test"), {
    type: "utf-8",
    address: "j\\x{00F6}rg@example.test",
  });
  for (
    const bad of [
      "utf-8;j\\x{zz}rg@example.test",
      "utf-8;j\\rg@example.test",
      "utf-8;j\\x{110000}@example.test",
    ]
  ) {
    assert.throws(() => parseOrcpt(bad), (e: unknown) => e instanceof SmtpError && e.code === 501, bad);
  }
});

Deno.test("parseOrcpt() refuses bad xtext and bad shapes (501 5.5.4)", () => {
  for (
    const bad of [
      "rfc822;a+2gb@x",
      "rfc822;a+",
      "rfc822;a+2",
      "rfc822;a b@x",
      "rfc822;a=b@x",
      "rfc822;+0Dx",
      "rfc822;",
      "rfc822",
      ";a@x",
      "rfc_822;a@x",
      "-rfc;a@x",
      "rfc822;" + "a".repeat(501),
      "",
      undefined,
    ]
  ) {
    throws501(() => parseOrcpt(bad), JSON.stringify(bad)?.slice(0, 40));
  }
});

Deno.test("parseRet() accepts FULL and HDRS in any case only", () => {
  assert.equal(parseRet("FULL"), "FULL");
  assert.equal(parseRet("hdrs"), "HDRS");
  for (const bad of ["", "HEADERS", "FULL,HDRS", undefined]) throws501(() => parseRet(bad), String(bad));
});

Deno.test("parseEnvid() decodes xtext and limits the length to 100", () => {
  assert.equal(parseEnvid("QQ314159"), "QQ314159");
  assert.equal(parseEnvid("id+2B1"), "id+1");
  assert.equal(parseEnvid("a".repeat(100)), "a".repeat(100));
  throws501(() => parseEnvid("a".repeat(101)), "101 chars");
  throws501(() => parseEnvid(undefined), "missing");
  throws501(() => parseEnvid("bad+2g"), "bad xtext");
  throws501(() => parseEnvid("a+0Ab"), "control after decoding");
  throws501(() => parseEnvid("caf+C3+A9"), "non-ASCII after decoding");
});
