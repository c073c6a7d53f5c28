/** `/readyz` follows the spool's real state: a spool worker that died for good makes Ferry not ready. */

import assert from "node:assert/strict";
import { validateConfig } from "../../src/config/load.ts";
import { MemoryLog } from "../../src/core/log.ts";
import { startFerry } from "../../src/main.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { waitFor } from "../helpers/downstream.ts";

Deno.test("admin /readyz: 503 with spoolError once the spool worker died for good; 200 before and after a restart it survived", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-readyz-" });
  const logged: string[] = [];
  const fatal: Error[] = [];
  const spool = new SqliteSpool({
    dir: `${dir}/spool`,
    log: (l) => logged.push(l),
    // In-process: record the fatal report instead of exiting 75.
    onFatal: (e) => fatal.push(e),
  });
  const config = validateConfig({
    hostname: "ferry.test",
    listen: [{ address: "127.0.0.1", port: 0 }],
    spool: { dir: `${dir}/spool` },
    delivery: { enable: false },
    admin: { listen: "127.0.0.1:0" },
  });
  const ferry = await startFerry(config, { log: new MemoryLog(), spool });
  const readyz = async () => {
    const res = await fetch(`${ferry.admin!.url}/readyz`);
    return { status: res.status, body: await res.json() };
  };
  try {
    assert.deepEqual(await readyz(), {
      status: 200,
      body: { ready: true, spool: true, listeners: true, stopping: false },
    });
    const restarts = () => logged.filter((l) => /spool worker restarted/.test(l)).length;
    // One death is survived: once the restart is logged, Ferry is ready again.
    await spool.crashWorkerForTest().catch(() => {});
    // Asking the spool meanwhile is what meets the dead worker; bounded, so a restart never logged fails.
    const poke = (done: () => boolean) => async () => (await spool.count().catch(() => {}), done());
    await waitFor(poke(() => restarts() > 0), 10_000, "the worker restart logged");
    assert.equal((await readyz()).status, 200);
    // The fourth death within a minute is for good (maxRestarts 3 in 60 s).
    for (let i = 0; i < 3 && fatal.length === 0; i++) {
      const before = restarts();
      await spool.crashWorkerForTest().catch(() => {});
      await waitFor(
        poke(() => restarts() > before || fatal.length > 0),
        10_000,
        "a restart or the fatal end",
      );
    }
    assert.equal(fatal.length, 1);
    const r = await readyz();
    assert.equal(r.status, 503);
    assert.equal(r.body.ready, false);
    assert.equal(r.body.spool, false);
    assert.match(r.body.spoolError, /failed 4 times/);
    assert.equal(r.body.listeners, true);
  } finally {
    await ferry.stop().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
