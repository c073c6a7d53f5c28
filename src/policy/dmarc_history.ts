/**
 * DMARC aggregate-report history (Exim's history file role, RFC 7489 7.2): one row per evaluated message,
 * kept in an SQLite file (node:sqlite, WAL) until the report covering it has been queued. Also the contract
 * through which the dmarc() check hands results to the reporter (`DmarcReportSink`).
 */

import { DatabaseSync } from "node:sqlite";

/** One evaluated message, as a report row needs it. */
export interface DmarcHistoryEntry {
  /** When (ms since the epoch) */
  at: number;
  /** The domain whose DMARC record was used (the report is about it) */
  policyDomain: string;
  /** The record's tags (p, sp, pct, adkim, aspf, fo, rua, ruf) */
  tags: Record<string, string>;
  sourceIp: string;
  headerFrom: string;
  envelopeFrom: string;
  envelopeTo?: string;
  /** The whole MAIL FROM address, for failure reports ("" for the null sender) */
  mailFrom?: string;
  /** The policy applied: none, quarantine, reject */
  disposition: string;
  dkimAligned: boolean;
  spfAligned: boolean;
  /** A policy override reason (sampled_out, local_policy) */
  reason?: string;
  dkim: { domain: string; selector?: string; result: string }[];
  spf: { domain: string; scope: "mfrom" | "helo"; result: string };
}

/** Where the dmarc() check sends what reports need (set up by main when `dmarc.reports` is configured). */
export interface DmarcReportSink {
  /** Records one evaluated message for the aggregate report */
  record(entry: DmarcHistoryEntry): void;
  /**
   * Sends a failure report (RFC 6591) when enabled (`forced`: Exim's dmarc_enable_forensic for this message)
   * and the record's fo= asks for one; never throws
   */
  failure(
    entry: DmarcHistoryEntry,
    message: Uint8Array,
    opts?: { forced?: boolean; authResults?: string },
  ): Promise<void>;
}

/** A stored row. */
export interface StoredEntry extends DmarcHistoryEntry {
  id: number;
}

/** The history file. */
export class DmarcHistory {
  #db: DatabaseSync;

  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
      CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY, at INTEGER NOT NULL,
        policy_domain TEXT NOT NULL, entry TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS history_domain ON history (policy_domain, at);`);
  }

  /** Adds an entry. */
  record(e: DmarcHistoryEntry): void {
    this.#db.prepare("INSERT INTO history (at, policy_domain, entry) VALUES (?, ?, ?)").run(
      e.at,
      e.policyDomain.toLowerCase(),
      JSON.stringify(e),
    );
  }

  /** Entries recorded before `until`, grouped by policy domain. */
  pending(until: number): Map<string, StoredEntry[]> {
    const rows = this.#db.prepare("SELECT id, entry FROM history WHERE at < ? ORDER BY policy_domain, at")
      .all(
        until,
      ) as { id: number; entry: string }[];
    const out = new Map<string, StoredEntry[]>();
    for (const r of rows) {
      const e = { ...JSON.parse(r.entry), id: Number(r.id) } as StoredEntry;
      const key = e.policyDomain.toLowerCase();
      out.set(key, [...(out.get(key) ?? []), e]);
    }
    return out;
  }

  /** Forgets entries whose report was queued. */
  remove(ids: readonly number[]): void {
    const del = this.#db.prepare("DELETE FROM history WHERE id = ?");
    this.#db.exec("BEGIN");
    try {
      for (const id of ids) del.run(id);
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  /** Number of entries kept. */
  count(): number {
    return Number((this.#db.prepare("SELECT count(*) AS n FROM history").get() as { n: number }).n);
  }

  close(): void {
    this.#db.close();
  }
}
