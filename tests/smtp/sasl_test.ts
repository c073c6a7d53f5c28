import assert from "node:assert/strict";
import { decodeResponse, encodePlain, parsePlain, SaslDecodeError } from "../../src/smtp/sasl.ts";

Deno.test("decodeResponse() takes '=' as empty and refuses text that is not strict base64", () => {
  assert.equal(decodeResponse("="), "");
  assert.equal(decodeResponse("YWxpY2U="), "alice");
  for (const bad of ["", "YWxpY2U", "YW*pY2U=", "YWxp Y2U=", "====", "/w=="]) {
    assert.throws(() => decodeResponse(bad), SaslDecodeError, bad);
  }
});

Deno.test("parsePlain() keeps authzid apart from authcid and refuses malformed messages", () => {
  assert.deepEqual(parsePlain("\0alice\0pw"), { authzid: "", authcid: "alice", password: "pw" });
  assert.deepEqual(parsePlain("boss\0alice\0pw"), { authzid: "boss", authcid: "alice", password: "pw" });
  assert.equal(parsePlain("alice\0pw"), undefined);
  assert.equal(parsePlain("\0\0pw"), undefined);
  assert.equal(parsePlain("\0alice\0"), undefined);
  assert.equal(parsePlain("a\0b\0c\0d"), undefined);
  assert.equal(decodeResponse(encodePlain("ü", "pw")), "\0ü\0pw");
});
