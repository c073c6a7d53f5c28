import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import {
  type Downstream,
  linesOf,
  startDownstream,
  startFerryIn,
  submit,
  waitFor,
} from "../helpers/downstream.ts";

async function rig(target: Downstream) {
  return await startFerryIn({
    routes: [{ name: "smart", domains: "*", hosts: [`127.0.0.1:${target.port}`] }],
    delivery: { enable: true, idleTimeout: "5s" },
  }, { resolver: new MemoryResolver() });
}

Deno.test("messages to the same host reuse one open connection", async () => {
  const target = startDownstream();
  const up = await rig(target);
  try {
    for (let i = 1; i <= 3; i++) {
      await submit(up.port, [`r${i}@example.test`]);
      await waitFor(() => linesOf(up.memlog, "=>").length === i, 15_000, `message ${i}`);
    }
    assert.equal(target.connections, 1);
    assert.equal(target.messages.length, 3);
  } finally {
    await up.dispose();
    await target.stop();
  }
});

for (
  const [how, reply] of [["closed silently", undefined], [
    "closed with 421",
    "421 4.4.2 Idle timeout",
  ]] as const
) {
  Deno.test(`a cached connection the server ${how} is replaced, not counted against the host`, async () => {
    const target = startDownstream();
    const up = await rig(target);
    try {
      await submit(up.port, ["first@example.test"]);
      await waitFor(() => target.messages.length === 1, 15_000, "first message");
      await waitFor(() => up.memlog.has("Completed"), 8000, "first completion");
      await target.kick(reply);
      await new Promise((r) => setTimeout(r, 50));
      const id = await submit(up.port, ["second@example.test"]);
      await waitFor(
        () => target.messages.length === 2 || linesOf(up.memlog, "==").length > 0,
        15_000,
        "an outcome for the second message",
      );
      assert.deepEqual(linesOf(up.memlog, "=="), []);
      assert.equal(target.messages.length, 2);
      assert.equal(target.connections, 2);
      assert.equal(up.memlog.lines.filter((l) => l.fields.event === "host_error").length, 0);
      await waitFor(async () => (await up.spool.get(id)) === undefined, 8000, "second completion");
    } finally {
      await up.dispose();
      await target.stop();
    }
  });
}
