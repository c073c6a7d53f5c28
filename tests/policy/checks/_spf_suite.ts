/**
 * The openspf.org RFC 7208 test suite (read from ../shared/testdata/spf/ at run time) as MemoryResolver zones,
 * following the suite's driver conventions: SPF-type records also serve as TXT unless the name lists TXT
 * records itself (or `TXT: NONE`), and `TIMEOUT` makes every query of a type not listed before it time out.
 */

import { parseAllDocuments } from "yaml";
import { MemoryResolver } from "../../../src/dns/memory_resolver.ts";
import type { RecordType } from "../../../src/dns/resolver.ts";

/** One case of the suite. */
export interface SpfCase {
  section: string;
  name: string;
  helo: string;
  host: string;
  mailfrom: string;
  /** Acceptable results */
  results: string[];
  explanation?: string;
}

/** One section: its cases and the resolver serving its zone data. */
export interface SpfSection {
  description: string;
  cases: SpfCase[];
  resolver: MemoryResolver;
  /** The zone data as [name, type, value] triples (for serving it from unbound) */
  records: [string, RecordType, string | { exchange: string; preference: number }][];
  /** Names with a TIMEOUT entry */
  timeouts: string[];
}

export const SUITE_PATH = new URL("../../../../shared/testdata/spf/rfc7208-tests.yml", import.meta.url);

type Entry = string | Record<string, unknown>;
const TYPES: RecordType[] = ["A", "AAAA", "MX", "TXT", "PTR", "CNAME"];

/** Loads every section of the suite. */
export async function loadSpfSuite(): Promise<SpfSection[]> {
  const text = await Deno.readTextFile(SUITE_PATH);
  const sections: SpfSection[] = [];
  for (const doc of parseAllDocuments(text)) {
    const d = doc.toJS() as {
      description: string;
      tests: Record<string, Record<string, unknown>>;
      zonedata: Record<string, Entry[]>;
    };
    if (!d) continue;
    const resolver = new MemoryResolver();
    const records: SpfSection["records"] = [];
    const timeouts: string[] = [];
    for (const [name, entries] of Object.entries(d.zonedata ?? {})) {
      const byType = new Map<RecordType, (string | { exchange: string; preference: number })[]>();
      const spf: string[] = [];
      let txtListed = false;
      let timeout = false;
      const listedBeforeTimeout = new Set<RecordType>();
      for (const e of entries ?? []) {
        if (e === "TIMEOUT") {
          timeout = true;
          continue;
        }
        const [type, raw] = Object.entries(e as Record<string, unknown>)[0];
        const value = Array.isArray(raw) && type !== "MX" ? raw.join("") : raw;
        if (type === "SPF") {
          spf.push(String(value));
          continue;
        }
        const t = type as RecordType;
        // `TXT: NONE` only says "no TXT copy of the SPF records": with a TIMEOUT after it, TXT times out.
        if (t === "TXT") {
          txtListed = true;
          if (value === "NONE") continue;
        }
        if (!timeout) listedBeforeTimeout.add(t);
        const list = byType.get(t) ?? [];
        list.push(
          t === "MX"
            ? { preference: Number((raw as unknown[])[0]), exchange: String((raw as unknown[])[1]) }
            : String(value),
        );
        byType.set(t, list);
      }
      if (!txtListed && spf.length) {
        byType.set("TXT", spf);
        listedBeforeTimeout.add("TXT");
      }
      for (const [t, list] of byType) {
        resolver.set(name, t, list as never[]);
        for (const v of list) records.push([name, t, v]);
      }
      if (txtListed && !byType.has("TXT")) resolver.set(name, "TXT", []);
      if (timeout) {
        timeouts.push(name);
        for (const t of TYPES) if (!listedBeforeTimeout.has(t)) resolver.fail(name, t, "TIMEOUT");
      }
    }
    const cases: SpfCase[] = Object.entries(d.tests).map(([name, t]) => ({
      section: d.description,
      name,
      helo: String(t.helo ?? ""),
      host: String(t.host),
      mailfrom: String(t.mailfrom ?? ""),
      results: Array.isArray(t.result) ? t.result.map(String) : [String(t.result)],
      explanation: t.explanation === undefined ? undefined : String(t.explanation),
    }));
    sections.push({ description: d.description, cases, resolver, records, timeouts });
  }
  return sections;
}
