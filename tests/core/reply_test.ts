import assert from "node:assert/strict";
import { formatReply, reply, replyForError, SmtpError } from "../../src/core/reply.ts";

Deno.test("formatReply() writes one line with the enhanced code and CRLF", () => {
  assert.equal(formatReply(reply(250, "2.1.0", "Sender OK")), "250 2.1.0 Sender OK\r\n");
  assert.equal(formatReply(reply(220, undefined, "mx ESMTP")), "220 mx ESMTP\r\n");
});

Deno.test("formatReply() uses dashes on all but the last line, enhanced code on each", () => {
  assert.equal(
    formatReply(reply(550, "5.7.1", ["first", "second", "third"])),
    "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
  );
  assert.equal(formatReply(reply(250, undefined, ["mx", "SIZE 10"])), "250-mx\r\n250 SIZE 10\r\n");
});

Deno.test("formatReply() with no lines still writes one reply line", () => {
  assert.equal(formatReply({ code: 250, lines: [] }), "250 \r\n");
});

Deno.test("SmtpError carries code, enhanced code, close flag and cause", () => {
  const cause = new Error("disk full");
  const e = new SmtpError(452, "4.3.1", "Insufficient storage", { cause, close: true });
  assert.ok(e instanceof Error);
  assert.equal(e.name, "SmtpError");
  assert.equal(e.temporary, true);
  assert.equal(e.close, true);
  assert.equal(e.cause, cause);
  assert.deepEqual(e.toReply(), { code: 452, enhanced: "4.3.1", lines: ["Insufficient storage"] });
  const perm = new SmtpError(550, "5.7.1", "No");
  assert.equal(perm.temporary, false);
  assert.equal(perm.close, false);
});

Deno.test("replyForError() answers SmtpErrors as themselves and anything else as 451 4.3.0", () => {
  assert.deepEqual(replyForError(new SmtpError(554, "5.7.0", "Go away")), reply(554, "5.7.0", "Go away"));
  for (const thing of [new Error("secret detail"), "string", undefined, { code: 550 }]) {
    const r = replyForError(thing);
    assert.equal(r.code, 451);
    assert.equal(r.enhanced, "4.3.0");
    assert.doesNotMatch(r.lines.join(" "), /secret/);
  }
});
