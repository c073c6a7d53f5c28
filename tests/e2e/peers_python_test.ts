/** End to end with Python as the client: smtplib with DSN and SMTPUTF8 parameters, BDAT over a raw socket. */

import assert from "node:assert/strict";
import { withFerry } from "../helpers/ferry.ts";
import { runPython, spoolIdIn } from "../helpers/peers.ts";

const dec = new TextDecoder();

const SMTPLIB_DSN = `
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="py.test", timeout=5)
msg = b"Subject: dsn\\r\\nMessage-ID: <dsn-1@py.test>\\r\\n\\r\\nbody with DSN\\r\\n"
refused = s.sendmail(
    "sender@py.test",
    ["a+b@example.test", "c@example.test"],
    msg,
    mail_options=["RET=HDRS", "ENVID=abc+2Bdef"],
    rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2Bb@example.test"],
)
print("refused", refused)
s.quit()
`;

Deno.test("smtplib sendmail with RET, ENVID, NOTIFY and ORCPT: the spool keeps every DSN parameter decoded", async () => {
  await withFerry({}, async (f) => {
    const r = await runPython(SMTPLIB_DSN, [String(f.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /refused \{\}/);
    const list = await f.spool.list();
    assert.equal(list.length, 1);
    const env = list[0].envelope;
    assert.equal(env.sender, "sender@py.test");
    assert.equal(env.ret, "HDRS");
    assert.equal(env.envid, "abc+def");
    assert.deepEqual(env.recipients.map((x) => x.address), ["a+b@example.test", "c@example.test"]);
    for (const rcpt of env.recipients) {
      assert.deepEqual(rcpt.notify, ["SUCCESS", "FAILURE"]);
      assert.deepEqual(rcpt.orcpt, { type: "rfc822", address: "a+b@example.test" });
      assert.equal(rcpt.status, "pending");
    }
    const data = dec.decode(await f.spool.readData(env.id));
    assert.ok(data.endsWith("Subject: dsn\r\nMessage-ID: <dsn-1@py.test>\r\n\r\nbody with DSN\r\n"));
    assert.ok(f.memlog.has(`<= sender@py.test H=(py.test) [127.0.0.1]:`));
    assert.ok(f.memlog.has(/P=esmtp S=\d+ id=dsn-1@py\.test for a\+b@example\.test c@example\.test/));
  });
});

const SMTPLIB_UTF8 = `
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="py.test", timeout=5)
msg = "Subject: grüße\\r\\n\\r\\nhéllo wörld\\r\\n".encode("utf-8")
refused = s.sendmail("jürgen@absender.test", ["zoë@example.test"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
print("refused", refused)
s.quit()
`;

Deno.test("smtplib with SMTPUTF8: UTF-8 addresses are accepted, stored as utf8smtp with 8-bit content intact", async () => {
  await withFerry({}, async (f) => {
    const r = await runPython(SMTPLIB_UTF8, [String(f.port)]);
    assert.equal(r.code, 0, r.stderr);
    const [{ envelope: env }] = await f.spool.list();
    assert.equal(env.sender, "jürgen@absender.test");
    assert.deepEqual(env.recipients.map((x) => x.address), ["zoë@example.test"]);
    assert.equal(env.smtputf8, true);
    assert.equal(env.body, "8BITMIME");
    assert.equal(env.protocol, "utf8smtp");
    const data = dec.decode(await f.spool.readData(env.id));
    assert.match(data, /\tby ferry\.test \(Ferry\) with UTF8SMTP\r\n/);
    assert.ok(data.endsWith("Subject: grüße\r\n\r\nhéllo wörld\r\n"));
  });
});

const SMTPLIB_NO_UTF8 = `
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="py.test", timeout=5)
s.ehlo()
s.command_encoding = "utf-8"
print(s.mail("jürgen@absender.test"))
s.quit()
`;

Deno.test("a UTF-8 sender without the SMTPUTF8 parameter is refused with 553 5.6.7", async () => {
  await withFerry({}, async (f) => {
    const r = await runPython(SMTPLIB_NO_UTF8, [String(f.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\(553, b'5\.6\.7 /);
  });
});

const BDAT_RAW = `
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.rstrip("\\r\\n"))
        if len(line) < 4 or line[3] != "-":
            return lines
def cmd(text):
    s.sendall(text)
    return reply()
print("banner", reply())
print("ehlo", cmd(b"EHLO py.test\\r\\n"))
print("mail", cmd(b"MAIL FROM:<chunky@py.test>\\r\\n"))
print("rcpt", cmd(b"RCPT TO:<bob@example.test>\\r\\n"))
c1 = b"Subject: chunks\\r\\n\\r\\nline one\\r\\n.\\r\\n"
c2 = b"..not stuffed\\r\\nlast line\\r\\n"
print("bdat1", cmd(b"BDAT %d\\r\\n" % len(c1) + c1))
print("bdat2", cmd(b"BDAT %d\\r\\n" % len(c2) + c2))
print("bdat3", cmd(b"BDAT 0 LAST\\r\\n"))
print("quit", cmd(b"QUIT\\r\\n"))
`;

Deno.test("BDAT chunks from a Python socket are stored byte for byte: no unstuffing, no terminator", async () => {
  await withFerry({}, async (f) => {
    const r = await runPython(BDAT_RAW, [String(f.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ehlo .*'250-CHUNKING'/);
    assert.match(r.stdout, /bdat1 \['250 2\.0\.0 \d+ octets received'\]/);
    assert.match(r.stdout, /bdat2 \['250 2\.0\.0 \d+ octets received'\]/);
    assert.match(r.stdout, /bdat3 \['250 2\.0\.0 OK id=/);
    const id = spoolIdIn(r.stdout.replace(/'/g, " "));
    assert.ok(id, r.stdout);
    const env = await f.spool.get(id);
    assert.equal(env?.sender, "chunky@py.test");
    const data = dec.decode(await f.spool.readData(id));
    // The trace field ends with the date line; the chunks follow it exactly as sent.
    const body = data.slice(data.indexOf("\r\nSubject: chunks") + 2);
    assert.equal(body, "Subject: chunks\r\n\r\nline one\r\n.\r\n..not stuffed\r\nlast line\r\n");
    assert.match(data, /^Received: [^]*\tfor <bob@example\.test>; [^\r\n]+\r\nSubject: chunks/);
  });
});

const BDAT_SIZES = `
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.rstrip("\\r\\n"))
        if len(line) < 4 or line[3] != "-":
            return lines
reply()
s.sendall(b"EHLO py.test\\r\\n"); reply()
# Pipelined: MAIL, RCPT and a refused BDAT (no valid recipient) whose chunk must still be swallowed.
s.sendall(b"MAIL FROM:<a@py.test>\\r\\nRCPT TO:<x@elsewhere.test>\\r\\nBDAT 21 LAST\\r\\nRCPT TO:<n@py.test>\\r\\n")
print("mail", reply()); print("rcpt", reply()); print("bdat", reply())
s.sendall(b"NOOP\\r\\n"); print("noop", reply())
s.sendall(b"MAIL FROM:<a@py.test>\\r\\nRCPT TO:<b@example.test>\\r\\nBDAT 30000 LAST\\r\\n" + b"x" * 29998 + b"\\r\\n")
print("mail2", reply()); print("rcpt2", reply()); print("bdat2", reply())
s.sendall(b"QUIT\\r\\n"); print("quit", reply())
`;

Deno.test("a refused BDAT still swallows its chunk, and an oversize BDAT message gets 552 with nothing spooled", async () => {
  await withFerry({ limits: { messageSize: "10KB" } }, async (f) => {
    const r = await runPython(BDAT_SIZES, [String(f.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /rcpt \['550 5\.7\.1 /);
    assert.match(r.stdout, /bdat \['554 5\.5\.1 No valid recipients'\]/);
    // The 21 octets "RCPT TO:<n@py.test>\r\n" were chunk data, not a command: the next reply is NOOP's.
    assert.match(r.stdout, /noop \['250 2\.0\.0 OK'\]/);
    assert.match(r.stdout, /bdat2 \['552 5\.3\.4 /);
    assert.match(r.stdout, /quit \['221 /);
    assert.equal(await f.spool.count(), 0);
  });
});
