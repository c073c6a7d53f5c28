/**
 * A store is never committed below synchronous=FULL, even after a claim (committed under NORMAL) failed in a
 * way that left its transaction open: its rollback failing too, as on an I/O error. SQLite refuses to change
 * the safety level inside a transaction, so restoring FULL after the claim failed as well, and the next
 * commits ran under NORMAL: acknowledged with 250, never synced.
 */

import assert from "node:assert/strict";
import { DatabaseSync, StatementSync } from "node:sqlite";
import { SpoolDb } from "../../src/spool/_spool_db.ts";
import { testEnvelope } from "./_helpers.ts";

Deno.test("a store after a claim whose rollback failed still commits under synchronous=FULL", () => {
  const dir = Deno.makeTempDirSync({ prefix: "ferry-sync-level-" });
  const exec = DatabaseSync.prototype.exec;
  const all = StatementSync.prototype.all;
  const executed: string[] = [];
  let failClaim = false;
  let failRollback = false;
  const db = new SpoolDb(dir);
  try {
    db.open();
    assert.ok(db.commit([{ kind: "store", envelope: testEnvelope("m1"), data: new Uint8Array(10) }])[0].ok);
    DatabaseSync.prototype.exec = function (this: DatabaseSync, sql: string) {
      executed.push(sql);
      if (sql === "ROLLBACK" && failRollback) {
        failRollback = false;
        throw new Error("disk I/O error (injected)");
      }
      return exec.call(this, sql);
    };
    StatementSync.prototype.all = function (this: StatementSync, ...args: unknown[]) {
      if (failClaim) {
        failClaim = false;
        throw new Error("claim failed (injected)");
      }
      return (all as (...a: unknown[]) => ReturnType<StatementSync["all"]>).apply(this, args);
    };
    failClaim = true;
    failRollback = true;
    assert.throws(() => db.claim(Date.now() + 60_000, 10));

    executed.length = 0;
    const results = db.commit([{ kind: "store", envelope: testEnvelope("m2"), data: new Uint8Array(10) }]);
    assert.ok(results[0].ok, JSON.stringify(results));
    const begin = executed.indexOf("BEGIN IMMEDIATE");
    assert.ok(begin >= 0, executed.join("; "));
    const level = executed.slice(0, begin).findLast((s) => s.startsWith("PRAGMA synchronous"));
    assert.equal(level, "PRAGMA synchronous = FULL", executed.join("; "));
  } finally {
    DatabaseSync.prototype.exec = exec;
    StatementSync.prototype.all = all;
    db.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
