/**
 * The spool across the schema change and against damage found at delivery time: a spool.db written the way
 * Ferry wrote it before schema 2 (and at schema 2, bodies whole) opens, converts and delivers; data that fails its digest when read for
 * delivery moves its message to `corrupt` (logged, kept), never retried, and the rest is delivered.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryConfig } from "../../mod.ts";
import { type DirFerry, startDownstream, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import { writeV1Spool } from "../spool/_v1_spool.ts";
import { writeV2Spool } from "../spool/_v2_spool.ts";
import { testEnvelope } from "../spool/_helpers.ts";

const config = (port: number, enable = true): FerryConfig => ({
  routes: [{ domains: "*", hosts: [`127.0.0.1:${port}`] }],
  delivery: { enable, queueInterval: "100ms" },
});

Deno.test("a spool written by the schema-1 code is converted at start and its messages are delivered", async () => {
  const down = startDownstream();
  const dir = await Deno.makeTempDir({ prefix: "ferry-v1-" });
  let ferry: DirFerry | undefined;
  try {
    const body = "Subject: from the old spool\r\n\r\nold body\r\n";
    const old = testEnvelope("AAAAAA-oldspool000-0001", {
      receivedAt: Date.now() - 60_000,
      recipients: [
        { address: "done@dest.test", status: "delivered", attempts: 1 },
        { address: "todo@dest.test", status: "pending", attempts: 1, lastError: "451 later", nextAttempt: 0 },
      ],
    });
    writeV1Spool(`${dir}/spool`, [{ envelope: old, data: new TextEncoder().encode(body) }]);
    ferry = await startFerryIn(config(down.port), { dir, resolver: new MemoryResolver() });
    assert.ok(ferry.memlog.has(/converted from schema 1 to 3 \(1 message\(s\)\)/));
    await waitFor(() => down.messages.length === 1, 8000, "delivery of the converted message");
    assert.deepEqual(
      down.messages[0].rcpts,
      ["todo@dest.test"],
      "the recipient delivered before is not sent again",
    );
    assert.equal(down.messages[0].data, body);
    await waitFor(async () => (await ferry!.spool.get(old.id)) === undefined, 8000, "completion");
  } finally {
    await ferry?.stop();
    await down.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a spool written by the schema-2 code (whole bodies) is converted at start and delivers its large message", async () => {
  const down = startDownstream();
  const dir = await Deno.makeTempDir({ prefix: "ferry-v2-" });
  let ferry: DirFerry | undefined;
  try {
    // Larger than a few chunks, so the old whole-body row is the only copy there is.
    const body = "Subject: from the schema-2 spool\r\n\r\n" + "0123456789abcdef\r\n".repeat(64 * 1024);
    const old = testEnvelope("AAAAAA-v2spool0000-0001", {
      receivedAt: Date.now() - 60_000,
      recipients: [{ address: "big@dest.test", status: "pending", attempts: 1, nextAttempt: 0 }],
    });
    writeV2Spool(`${dir}/spool`, [{ envelope: old, data: new TextEncoder().encode(body) }]);
    ferry = await startFerryIn(config(down.port), { dir, resolver: new MemoryResolver() });
    assert.ok(ferry.memlog.has(/converted spool.db from schema 2 to 3 \(1 message\(s\)\)/));
    await waitFor(() => down.messages.length === 1, 8000, "delivery of the converted message");
    assert.deepEqual(down.messages[0].rcpts, ["big@dest.test"]);
    assert.equal(down.messages[0].data, body);
    await waitFor(async () => (await ferry!.spool.get(old.id)) === undefined, 8000, "completion");
  } finally {
    await ferry?.stop();
    await down.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("data damaged in the spool is found when read for delivery: corrupt, logged, kept, not retried", async () => {
  const down = startDownstream();
  const dir = await Deno.makeTempDir({ prefix: "ferry-corrupt-" });
  let ferry: DirFerry | undefined;
  try {
    // Queue three messages with delivery off, then damage the middle one behind the spool's back.
    const first = await startFerryIn(config(down.port, false), { dir });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(
        await submit(first.port, [`r${i}@dest.test`], { body: `Subject: n${i}\r\n\r\nnumber ${i}\r\n` }),
      );
    }
    await first.stop();
    const victim = ids[1];
    const db = new DatabaseSync(`${dir}/spool/spool.db`);
    const row = db.prepare("SELECT bytes FROM chunks WHERE id = ? AND seq = 0").get(victim) as {
      bytes: Uint8Array;
    };
    const bad = row.bytes.slice();
    bad[bad.length - 3] ^= 0x20;
    db.prepare("UPDATE chunks SET bytes = ? WHERE id = ? AND seq = 0").run(bad, victim);
    db.close();

    ferry = await startFerryIn(config(down.port), { dir, resolver: new MemoryResolver() });
    await waitFor(() => down.messages.length === 2, 8000, "delivery of the two sound messages");
    const corruptLines = () =>
      ferry!.memlog.lines.filter((l) => l.text.includes(`"${victim}" moved to corrupt`));
    await waitFor(() => corruptLines().length > 0, 8000, "the corrupt log line");
    assert.match(corruptLines()[0].text, /digest does not match/);
    const kept = await ferry.spool.row(victim);
    assert.equal(kept?.state, "corrupt");
    await waitFor(async () => (await ferry!.spool.count()) === 1, 8000, "the sound ones completed");
    assert.equal(corruptLines().length, 1, "read once, not retried");
    assert.equal(down.messages.length, 2);
    assert.deepEqual(down.messages.map((m) => m.rcpts[0]).sort(), ["r0@dest.test", "r2@dest.test"]);
  } finally {
    await ferry?.stop();
    await down.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("new mail wakes the queue manager directly: a slow msg:received handler does not delay delivery", async () => {
  const down = startDownstream();
  let releaseHandler!: () => void;
  const handlerDone = new Promise<void>((res) => (releaseHandler = res));
  let ferry: DirFerry | undefined;
  try {
    ferry = await startFerryIn({
      ...config(down.port),
      delivery: { queueInterval: "1h" },
      events: { "msg:received": () => handlerDone },
    }, { resolver: new MemoryResolver() });
    await submit(ferry.port, ["r@dest.test"]);
    // Delivered while the handler is still running (and with no queue interval to fall back on).
    await waitFor(() => down.messages.length === 1, 8000, "delivery while the handler still runs");
  } finally {
    releaseHandler();
    await ferry?.dispose();
    await down.stop();
  }
});
