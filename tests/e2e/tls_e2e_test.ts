/** Whole-program TLS: STARTTLS and SMTPS with swaks, SNI, OCSP stapling from config, STARTTLS edge cases. */
import assert from "node:assert/strict";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { makeOcspPki } from "../helpers/ocsp_pki.ts";

loadOpenSsl();

async function run(cmd: string, args: string[], stdin?: string): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const o = await child.output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

/** `openssl s_client -starttls smtp` against Ferry on `port`, with extra arguments; QUIT is sent at once. */
function starttlsClient(port: number, extra: string[] = []): Promise<{ code: number; out: string }> {
  return run(
    "openssl",
    ["s_client", "-starttls", "smtp", "-connect", `127.0.0.1:${port}`, ...extra],
    "QUIT\r\n",
  );
}

async function stopAll(f: TestFerry): Promise<void> {
  await f.stop();
  await Deno.remove(f.dir, { recursive: true }).catch(() => {});
}

Deno.test("swaks --tls (STARTTLS) and --tlsc (SMTPS) deliver; SNI picks the named certificate set", async () => {
  const pki = await createPki();
  const def = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"], keyType: "rsa" });
  const other = await pki.issue({ cn: "other.test", dns: ["other.test"] });
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0 }, { address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: {
      certificates: [
        { cert: def.chainFile, key: def.keyFile },
        { cert: other.chainFile, key: other.keyFile, serverNames: ["other.test"] },
      ],
    },
  });
  try {
    const [plain, smtps] = f.addresses;
    const a = await run("swaks", [
      "--server",
      `127.0.0.1:${plain.port}`,
      "--tls",
      "--to",
      "u@example.test",
      "--from",
      "s@x.test",
    ]);
    assert.equal(a.code, 0, a.out);
    assert.match(a.out, /<- {2}250-STARTTLS/);
    assert.match(a.out, /TLS started with cipher TLSv1\.[23]/);
    assert.match(a.out, /<~ {2}250 2\.0\.0 OK id=/);
    const b = await run("swaks", [
      "--server",
      `127.0.0.1:${smtps.port}`,
      "--tlsc",
      "--to",
      "u@example.test",
      "--from",
      "s@x.test",
    ]);
    assert.equal(b.code, 0, b.out);
    assert.match(b.out, /<~ {2}250 2\.0\.0 OK id=/);
    const lines = f.memlog.lines.filter((l) => l.text.startsWith("<= ")).map((l) => l.text);
    assert.equal(lines.length, 2);
    for (const l of lines) assert.match(l, /P=esmtps X=TLS1\.[23]:\S+:\d+/);
    const [first] = await f.spool.list();
    const data = new TextDecoder().decode(await f.spool.readData(first.envelope.id));
    assert.match(data, /with ESMTPS \(TLS1\.[23]:/);

    for (const [name, cn] of [["other.test", "other.test"], ["unknown.test", "ferry.test"]]) {
      const s = await starttlsClient(plain.port, ["-servername", name]);
      assert.match(s.out, new RegExp(`subject=CN ?= ?${cn.replace(".", "\\.")}`), s.out);
    }
  } finally {
    await stopAll(f);
    await pki.cleanup();
  }
});

Deno.test("OCSP: a response file from config is stapled (s_client -status); a revoked one is not", async () => {
  const pki = await makeOcspPki();
  const good = await pki.issue("mx.ferry.test");
  const bad = await pki.issue("revoked.ferry.test");
  await pki.revoke(bad);
  const goodResp = `${pki.dir}/good.der`, badResp = `${pki.dir}/bad.der`;
  await Deno.writeFile(goodResp, await pki.respond(good));
  await Deno.writeFile(badResp, await pki.respond(bad));
  const f = await startTestFerry({
    tls: {
      certificates: [
        { cert: good.chain, key: good.key, ocsp: { file: goodResp } },
        { cert: bad.chain, key: bad.key, serverNames: ["revoked.ferry.test"], ocsp: { file: badResp } },
      ],
    },
  });
  try {
    const ok = await starttlsClient(f.port, ["-status"]);
    assert.match(ok.out, /OCSP Response Status: successful/);
    assert.match(ok.out, /Cert Status: good/);
    const no = await starttlsClient(f.port, ["-servername", "revoked.ferry.test", "-status"]);
    assert.match(no.out, /OCSP response: no response sent/);
    assert.ok(f.memlog.has(/OCSP .*revoked/i), "a warning about the revoked response is logged");
  } finally {
    await stopAll(f);
    await pki.cleanup();
  }
});

Deno.test("OCSP fetch: Ferry fetches the response from the AIA responder itself and staples it", async () => {
  const pki = await makeOcspPki();
  const cert = await pki.issue("mx.ferry.test");
  const responder = await pki.startResponder();
  const file = `${pki.dir}/fetched.der`;
  const f = await startTestFerry({
    tls: { certificates: [{ cert: cert.chain, key: cert.key, ocsp: { fetch: true, file } }] },
  });
  try {
    // The first fetch runs in the background after start-up.
    const end = Date.now() + 10_000;
    let size = 0;
    while (Date.now() < end && size === 0) {
      size = (await Deno.stat(file).catch(() => undefined))?.size ?? 0;
      if (size === 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(size > 0, "the fetched response is written to the file");
    const s = await starttlsClient(f.port, ["-status"]);
    assert.match(s.out, /OCSP Response Status: successful/);
    assert.match(s.out, /Cert Status: good/);
  } finally {
    await stopAll(f);
    await responder.stop();
    await pki.cleanup();
  }
});

const PY_STARTTLS = `
import smtplib, socket, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
# 1. Plaintext pipelined behind STARTTLS must not be obeyed.
s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode(); lines.append(l)
        if l[3:4] != "-": return "".join(lines)
reply(); s.sendall(b"EHLO py.test\\r\\n"); reply()
s.sendall(b"STARTTLS\\r\\nMAIL FROM:<injected@x.test>\\r\\n")
print("starttls", reply().split()[0])
t = ctx.wrap_socket(s, server_hostname="ferry.test"); g = t.makefile("rb")
def treply():
    lines = []
    while True:
        l = g.readline().decode(); lines.append(l)
        if l[3:4] != "-": return "".join(lines)
t.sendall(b"MAIL FROM:<after@x.test>\\r\\n"); print("mail-before-ehlo", treply().split()[0])
t.sendall(b"EHLO py.test\\r\\n"); r = treply(); print("ehlo", r.split()[0], "STARTTLS" in r)
t.sendall(b"STARTTLS\\r\\n"); print("starttls-again", treply().split()[0])
t.sendall(b"QUIT\\r\\n"); treply(); t.close()
# 2. smtplib through STARTTLS.
c = smtplib.SMTP("127.0.0.1", port); c.starttls(context=ctx); c.ehlo()
print("send", c.sendmail("a@x.test", ["u@example.test"], "Subject: t\\r\\n\\r\\nbody\\r\\n") == {}); c.quit()
`;

Deno.test("STARTTLS: plaintext pipelined behind it is discarded, EHLO is required again, a second STARTTLS gets 503", async () => {
  const pki = await createPki();
  const cert = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const f = await startTestFerry({ tls: ferryTls(cert) });
  try {
    const r = await run("python3", ["-c", PY_STARTTLS, String(f.port)]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^starttls 220$/m);
    assert.match(r.out, /^mail-before-ehlo 503$/m);
    assert.match(r.out, /^ehlo 250-\S+ False$/m);
    assert.match(r.out, /^starttls-again 503$/m);
    assert.match(r.out, /^send True$/m);
    assert.ok(f.memlog.has(/discarded \d+ octets pipelined after STARTTLS/));
    assert.ok(!f.memlog.has("injected@x.test"));
    assert.equal((await f.spool.list()).length, 1);
  } finally {
    await stopAll(f);
    await pki.cleanup();
  }
});

Deno.test("client certificates: the verified subject reaches policy", async () => {
  const pki = await createPki();
  const server = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const client = await pki.issue({ cn: "client.example.test" });
  const seen: (string | undefined)[] = [];
  const f = await startTestFerry({
    tls: {
      ...ferryTls(server),
      requestClientCert: true,
      clientCa: pki.certFile,
    },
    policy: {
      mail: [async (c, next) => {
        seen.push(c.tls?.peerSubject);
        await next();
      }],
    },
  });
  try {
    const r = await run("swaks", [
      "--server",
      `127.0.0.1:${f.port}`,
      "--tls",
      "--tls-cert",
      client.certFile,
      "--tls-key",
      client.keyFile,
      "--to",
      "u@example.test",
      "--from",
      "s@x.test",
    ]);
    assert.equal(r.code, 0, r.out);
    assert.equal(seen.length, 1);
    assert.match(seen[0] ?? "", /client\.example\.test/);
  } finally {
    await stopAll(f);
    await pki.cleanup();
  }
});

/**
 * One message over SMTPS through `openssl s_client` (the real peer: it sends any server name it is given),
 * each command written after the reply before it arrived. Returns the final reply's text.
 */
async function smtpsMessage(port: number, extra: string[]): Promise<string> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-quiet", "-ign_eof", "-connect", `127.0.0.1:${port}`, ...extra],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const w = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const until = async (re: RegExp) => {
    while (!re.test(seen)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`s_client ended before ${re}: ${seen}`);
      seen += value;
    }
  };
  const say = (line: string) => w.write(new TextEncoder().encode(line + "\r\n"));
  try {
    await until(/^220 /m);
    for (const [cmd, re] of [["EHLO client.test", /^250 /m], ["MAIL FROM:<s@x.test>", /2\.1\.0/]] as const) {
      await say(cmd);
      await until(re);
    }
    await say("RCPT TO:<u@example.test>");
    await until(/2\.1\.5/);
    await say("DATA");
    await until(/^354 /m);
    await say("Subject: sni\r\n\r\nx\r\n.");
    await until(/^250 2\.0\.0 OK id=/m);
    await say("QUIT");
    await until(/^221 /m);
    return seen;
  } finally {
    await w.close().catch(() => {});
    await reader.cancel().catch(() => {});
    await child.status;
  }
}

Deno.test("a server name that is not a host name (a line break in SNI) reaches neither the log nor policy; a client certificate's subject is logged as CV= DN=", async () => {
  const pki = await createPki();
  const server = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const client = await pki.issue({ cn: "client.example.test" });
  const seen: (string | undefined)[] = [];
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: { ...ferryTls(server), requestClientCert: true, clientCa: pki.certFile },
    policy: {
      mail: [async (c, next) => {
        seen.push(c.tls?.sni);
        await next();
      }],
    },
  });
  try {
    const forged =
      "1xaaaa-000000000000-0000 <= forged@x.test H=(x) [192.0.2.1]:1 P=esmtp S=1 for u@example.test";
    await smtpsMessage(f.port, ["-servername", `evil.test\n2026-12-07 00:00:00 ${forged}`]);
    await smtpsMessage(f.port, [
      "-servername",
      "ferry.test",
      "-cert",
      client.certFile,
      "-key",
      client.keyFile,
    ]);
    assert.deepEqual(seen, [undefined, "ferry.test"]);
    const received = f.memlog.lines.filter((l) => l.fields.event === "<=").map((l) => l.text);
    assert.equal(received.length, 2, received.join("\n"));
    for (const line of received) assert.doesNotMatch(line, /[\r\n]|forged/);
    assert.match(
      received[1],
      / X=TLS1\.3:\S+ CV=yes DN="[^"]*CN ?= ?client\.example\.test[^"]*" SNI=ferry\.test /,
    );
    const stored = await f.spool.list();
    const withCert = await Promise.all(
      stored.map(async (m) => new TextDecoder().decode(await f.spool.readData(m.envelope.id))),
    );
    assert.ok(
      withCert.some((d) =>
        /^Received: [^]*?\(TLS1\.3:\S+ CV=yes DN="[^"]*client\.example\.test[^"]*"\)/.test(d)
      ),
      withCert.join("\n----\n"),
    );
  } finally {
    await stopAll(f);
    await pki.cleanup();
  }
});
