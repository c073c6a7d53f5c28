import assert from "node:assert/strict";
import { startUnbound } from "../helpers/unbound.ts";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { freePort, startSink } from "../helpers/sink.ts";
import { waitFor } from "../helpers/downstream.ts";

async function swaks(f: TestFerry, rcpts: string[]): Promise<string> {
  const out = await new Deno.Command("swaks", {
    args: [
      "--server",
      `127.0.0.1:${f.port}`,
      "--from",
      "sender@client.test",
      "--to",
      rcpts.join(","),
      "--helo",
      "client.test",
      "--header",
      "Subject: relay",
      "--body",
      "relay body",
      "--pipeline",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, text);
  return /250 2\.0\.0 OK id=(\S+)/.exec(text)![1];
}

Deno.test("a message sent by swaks is relayed through MX from a real resolver to Postfix's smtp-sink and leaves the spool", async () => {
  const sinkPort = await freePort();
  const sink = await startSink(sinkPort);
  const unbound = await startUnbound({
    zones: [{ name: "example.test", records: "@ IN MX 10 mx\nmx IN A 127.0.0.1\n" }],
  });
  const f = await startTestFerry({
    relay: { domains: [], clients: ["127.0.0.0/8"] },
    routes: [{ domains: "*", mx: true, port: sinkPort }],
    delivery: { enable: true },
    dns: { nameservers: [{ address: "127.0.0.1", port: unbound.port }] },
  });
  try {
    const id = await swaks(f, ["a@example.test", "b@example.test"]);
    await waitFor(() => f.memlog.has("Completed"), 8000, "the delivery completed");
    assert.equal(await f.spool.get(id), undefined);
    const delivered = f.memlog.lines.filter((l) => l.text.startsWith("=> ")).map((l) => l.text);
    assert.equal(delivered.length, 2);
    assert.match(
      delivered[0],
      /^=> [ab]@example\.test R=mx0 T=smtp H=mx\.example\.test \[127\.0\.0\.1\]:\d+ TLS=none C="250/,
    );
    await waitFor(async () => (await sink.messages()).length === 1, 8000, "the message at the sink");
    const [msg] = await sink.messages();
    assert.match(msg, /relay body/);
    assert.match(msg, /Received: from client\.test/);
  } finally {
    await f.stop();
    await unbound.stop();
    await sink.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
