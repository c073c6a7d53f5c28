import assert from "node:assert/strict";
import { parseReply, RspamdClient, RspamdError } from "../../src/policy/rspamd_client.ts";
import { startRspamd } from "../helpers/rspamd.ts";

const enc = new TextEncoder();

function message(body: string): Uint8Array {
  return enc.encode(
    "From: a@sender.test\r\nTo: u@example.test\r\nSubject: hello\r\nMessage-ID: <1@sender.test>\r\n" +
      `Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\n${body}\r\n`,
  );
}

Deno.test("RspamdClient against rspamd 3.4: facts, actions, Settings-ID and header edits", async () => {
  const rspamd = await startRspamd();
  try {
    const client = new RspamdClient({ url: rspamd.url, timeoutMs: 10_000 });
    const base = {
      ip: "192.0.2.1",
      helo: "client.test",
      hostname: "client.example",
      from: "a@sender.test",
      rcpt: ["u@example.test", "v@example.test"],
      queueId: "1tE3Xz-0001Ab-Cd",
      user: "alice",
      tls: { cipher: "TLS_AES_256_GCM_SHA384", version: "TLSv1.3" },
    };
    const clean = await client.check({ ...base, message: message("nothing to see") });
    assert.equal(clean.action, "no action");
    assert.deepEqual(clean.symbols.FERRY_FACTS.options?.sort(), [
      "cipher=TLS_AES_256_GCM_SHA384",
      "from=a@sender.test",
      "helo=client.test",
      "hostname=client.example",
      "ip=192.0.2.1",
      "queue=1tE3Xz-0001Ab-Cd",
      "rcpt=u@example.test v@example.test",
      "user=alice",
      "version=TLSv1.3",
    ]);
    const spam = await client.check({ ...base, message: message("FERRY-TEST-SPAM") });
    assert.equal(spam.action, "reject");
    assert.ok(spam.symbols.FERRY_TEST.score >= 20 && spam.score >= spam.requiredScore, JSON.stringify(spam));
    // The same message under the settings that disable the test rule.
    const lenient = await client.check({
      ...base,
      settingsId: "lenient",
      message: message("FERRY-TEST-SPAM"),
    });
    assert.equal(lenient.action, "no action");
    assert.equal(lenient.symbols.FERRY_TEST, undefined);
    const header = await client.check({ ...base, message: message("FERRY-TEST-HEADER") });
    assert.equal(header.action, "add header");
    // rspamd's milter add_headers is a JSON object whose key order it does not keep the same from run to run.
    assert.deepEqual([...header.addHeaders].sort(([a], [b]) => a.localeCompare(b)), [
      ["X-Rspamd-Queue-Id", "1tE3Xz-0001Ab-Cd"],
      ["X-Spam-Status", `Yes, score=${header.score.toFixed(2)}`],
    ]);
    assert.ok(header.removeHeaders.includes("X-Spam-Status"));
    // GTUBE is rejected whatever the settings (rspamd skips settings for it).
    const gtube = await client.check({
      ...base,
      settingsId: "lenient",
      message: message("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"),
    });
    assert.equal(gtube.action, "reject");
    assert.ok(gtube.symbols.GTUBE);
  } finally {
    await rspamd.stop();
  }
});

Deno.test("RspamdClient: a closed port and a silent server fail within the deadline", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of l) held.push(c);
  })();
  try {
    const t0 = Date.now();
    await assert.rejects(
      new RspamdClient({ url: `http://127.0.0.1:${port}`, timeoutMs: 300 }).check({
        rcpt: [],
        message: message("x"),
      }),
      RspamdError,
    );
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  } finally {
    l.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
  await assert.rejects(
    new RspamdClient({ url: `http://127.0.0.1:${port}`, timeoutMs: 1000 }).check({
      rcpt: [],
      message: message("x"),
    }),
    RspamdError,
  );
});

Deno.test("parseReply(): rewrite subject, list-valued headers, and replies that are not rspamd's", () => {
  const r = parseReply({
    action: "rewrite subject",
    score: 9,
    required_score: 15,
    subject: "*** SPAM *** hello",
    symbols: { A: { score: 9, options: ["x"] } },
    milter: { add_headers: { "X-A": [{ value: "1", order: 0 }, "2"] }, remove_headers: { "X-A": 0 } },
    messages: { smtp_message: "go\r\naway" },
  });
  assert.equal(r.subject, "*** SPAM *** hello");
  assert.deepEqual(r.addHeaders, [["X-A", "1"], ["X-A", "2"]]);
  assert.deepEqual(r.removeHeaders, ["X-A"]);
  assert.equal(r.smtpMessage, "go away");
  assert.throws(() => parseReply({ action: "maybe" }), RspamdError);
  assert.throws(() => parseReply("no"), RspamdError);
});
