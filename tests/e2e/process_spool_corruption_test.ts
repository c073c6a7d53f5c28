/**
 * A damaged spool entry at start-up: the process still starts, logs the quarantine, moves the entry's
 * envelope, data and reason to `<spool>/quarantine/`, and recovers every other message.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { FerryProcess, sendMessage } from "../helpers/process.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";

Deno.test("a corrupt message in spool.db is quarantined at start-up and the others are recovered", async () => {
  const first = await FerryProcess.start();
  let second: FerryProcess | undefined;
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await sendMessage(first.port, { content: `Subject: n${i}\r\n\r\nmessage number ${i}\r\n` }));
    }
    assert.equal((await first.stop()).code, 0);

    // Flip the data of the middle message behind the spool's back (same length, different bytes).
    const victim = ids[1];
    const db = new DatabaseSync(`${first.spoolDir}/spool.db`);
    try {
      const row = db.prepare("SELECT bytes FROM data WHERE id = ?").get(victim) as { bytes: Uint8Array };
      const bad = row.bytes.slice();
      bad[bad.length - 3] ^= 0x20;
      const changed = db.prepare("UPDATE data SET bytes = ? WHERE id = ?").run(bad, victim);
      assert.equal(Number(changed.changes), 1);
    } finally {
      db.close();
    }

    second = await FerryProcess.start({ dir: first.dir });
    await second.waitFor(/Ferry started/);
    const out = second.stdout;
    assert.match(
      out,
      new RegExp(`spool entry ${victim} quarantined to \\S+/quarantine/${victim}: .*SHA-256`),
    );
    assert.match(out, /spool \S+: 2 message\(s\) queued/);
    assert.doesNotMatch(out, new RegExp(`(${ids[0]}|${ids[2]}).*quarantine`));
    // Still serving mail.
    const fourth = await sendMessage(second.port);
    assert.equal((await second.stop()).code, 0);

    const q = `${first.spoolDir}/quarantine`;
    const names = [...Deno.readDirSync(q)].map((e) => e.name).sort();
    assert.deepEqual(names, [`${victim}.data`, `${victim}.envelope`, `${victim}.reason`]);
    assert.match(await Deno.readTextFile(`${q}/${victim}.reason`), /SHA-256/);
    assert.match(
      await Deno.readTextFile(`${q}/${victim}.data`),
      /Subject: n1\r\n\r\nmessage number \x11\r\n$/,
      "the damaged bytes are kept as evidence",
    );
    assert.equal(JSON.parse(await Deno.readTextFile(`${q}/${victim}.envelope`)).id, victim);

    const spool = new SqliteSpool({ dir: first.spoolDir, thread: "main" });
    const report = await spool.open();
    try {
      assert.deepEqual(report.quarantined, []);
      assert.deepEqual(report.recovered.sort(), [ids[0], ids[2], fourth].sort());
      assert.match(new TextDecoder().decode(await spool.readData(ids[2])), /message number 2\r\n$/);
    } finally {
      await spool.close();
    }
  } finally {
    await second?.cleanup();
    await first.cleanup();
  }
});
