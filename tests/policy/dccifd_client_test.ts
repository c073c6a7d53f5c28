import assert from "node:assert/strict";
import {
  DccError,
  DccifdClient,
  dccOutcome,
  encodeDccRequest,
  parseDccReply,
} from "../../src/policy/dccifd_client.ts";
import { parseDccRequest, startScriptedDccifd } from "../helpers/dccifd.ts";

const enc = new TextEncoder();
const msg = (body: string) => enc.encode(`From: a@sender.test\r\nSubject: x\r\n\r\n${body}\r\n`);

Deno.test("encodeDccRequest(): the dccif.h request, byte for byte", () => {
  const bytes = encodeDccRequest({
    ip: "192.0.2.1",
    hostname: "client.example",
    helo: "client.test",
    sender: "",
    recipients: ["u@example.test", "v@example.test"],
    message: msg("hi"),
  });
  assert.equal(
    new TextDecoder().decode(bytes),
    "header\n192.0.2.1\rclient.example\nclient.test\n<>\nu@example.test\nv@example.test\n\n" +
      "From: a@sender.test\nSubject: x\n\nhi\n",
  );
  assert.equal(parseDccRequest(bytes).recipients.length, 2);
});

Deno.test("parseDccReply(): overall, per recipient, a folded X-DCC header; bad answers are errors", () => {
  const r = parseDccReply("S\nAR\nX-DCC-Example-Metrics: host 1; bulk\n\tBody=many\n", 2);
  assert.deepEqual(r, {
    overall: "S",
    recipients: ["A", "R"],
    header: ["X-DCC-Example-Metrics", "host 1; bulk Body=many"],
  });
  assert.equal(parseDccReply("A\n\nX-Other: no\n", 1).header, undefined);
  assert.deepEqual(parseDccReply("R\n\n", 2).recipients, ["R", "R"]);
  assert.throws(() => parseDccReply("Q\nA\n", 1), DccError);
  assert.throws(() => parseDccReply("A\nAAA\n", 1), DccError);
  assert.deepEqual(["A", "S", "R", "G", "T"].map((o) => dccOutcome(o as "A")), [
    "accept",
    "accept",
    "fail",
    "fail",
    "defer",
  ]);
});

Deno.test("DccifdClient against the scripted dccifd over TCP and a unix socket", async () => {
  const dir = await Deno.makeTempDir();
  const tcp = startScriptedDccifd();
  const unix = startScriptedDccifd({ unix: `${dir}/dccifd` });
  try {
    for (const d of [tcp, unix]) {
      const client = new DccifdClient({ address: d.address, timeoutMs: 2000 });
      const base = { ip: "192.0.2.1", hostname: "c.example", helo: "c.test", sender: "a@sender.test" };
      const ok = await client.check({ ...base, recipients: ["u@example.test"], message: msg("hello") });
      assert.deepEqual([ok.overall, ok.recipients], ["A", ["A"]]);
      assert.equal(ok.header?.[0], "X-DCC-Ferry-Test-Metrics");
      const some = await client.check({
        ...base,
        recipients: ["u@example.test", "spamtrap@example.test"],
        message: msg("hello"),
      });
      assert.deepEqual([some.overall, some.recipients], ["S", ["A", "R"]]);
      const grey = await client.check({ ...base, recipients: ["u@example.test"], message: msg("DCC-GREY") });
      assert.equal(dccOutcome(grey.overall), "fail");
      assert.deepEqual(d.seen[0], {
        options: ["header"],
        ip: "192.0.2.1",
        hostname: "c.example",
        helo: "c.test",
        sender: "a@sender.test",
        recipients: ["u@example.test"],
        body: "From: a@sender.test\nSubject: x\n\nhello\n",
      });
      const t0 = Date.now();
      await assert.rejects(
        new DccifdClient({ address: d.address, timeoutMs: 300 }).check({
          ...base,
          recipients: ["u@example.test"],
          message: msg("DCC-SILENT"),
        }),
        DccError,
      );
      assert.ok(Date.now() - t0 < 2000);
    }
  } finally {
    await tcp.stop();
    await unix.stop();
    await Deno.remove(dir, { recursive: true });
  }
  await assert.rejects(
    new DccifdClient({ address: tcp.address, timeoutMs: 1000 }).check({
      sender: "",
      recipients: ["u@example.test"],
      message: msg("x"),
    }),
    DccError,
  );
});
