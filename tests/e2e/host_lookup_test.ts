/** smtp.hostLookup: the client's name by forward-confirmed reverse DNS, from a real resolver (unbound). */
import assert from "node:assert/strict";
import { startUnbound } from "../helpers/unbound.ts";
import { startTestFerry } from "../helpers/ferry.ts";

async function swaksFrom(port: number, source: string): Promise<string> {
  const out = await new Deno.Command("swaks", {
    args: [
      "--server",
      `127.0.0.1:${port}`,
      "--local-interface",
      source,
      "--helo",
      "helo.test",
      "--from",
      "a@x.test",
      "--to",
      "u@example.test",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, text);
  return text;
}

Deno.test("a PTR name that resolves back is the client's name in policy, logs and Received:; one that does not is ignored", async () => {
  const u = await startUnbound({
    localData: [
      "2.0.0.127.in-addr.arpa. PTR client.example.test.",
      "client.example.test. A 127.0.0.2",
      "3.0.0.127.in-addr.arpa. PTR liar.example.test.",
      "liar.example.test. A 192.0.2.9",
    ],
  });
  const seen: (string | undefined)[] = [];
  const f = await startTestFerry({
    smtp: { hostLookup: ["127.0.0.0/8"] },
    dns: { nameservers: [{ address: "127.0.0.1", port: u.port }] },
    policy: {
      connect: [async (c, next) => {
        seen.push(c.client.name);
        await next();
      }],
    },
  });
  try {
    await swaksFrom(f.port, "127.0.0.2");
    await swaksFrom(f.port, "127.0.0.3");
    assert.deepEqual(seen, ["client.example.test", undefined]);
    const lines = f.memlog.lines.map((l) => l.text);
    assert.ok(
      lines.some((l) => l.startsWith("<= a@x.test H=client.example.test (helo.test) [127.0.0.2]:")),
      lines.join("\n"),
    );
    assert.ok(lines.some((l) => l.startsWith("<= a@x.test H=(helo.test) [127.0.0.3]:")));
    assert.ok(
      lines.some((l) =>
        /no host name found for IP address 127\.0\.0\.3: PTR liar\.example\.test does not resolve back/.test(
          l,
        )
      ),
    );
    const named = (await f.spool.list()).find((e) => e.envelope.client.ip === "127.0.0.2")!;
    assert.equal(named.envelope.client.name, "client.example.test");
    const data = new TextDecoder().decode(await f.spool.readData(named.envelope.id));
    assert.match(data, /^Received: from helo\.test \(client\.example\.test \[127\.0\.0\.2\]:\d+\)/);
  } finally {
    await f.stop();
    await u.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
