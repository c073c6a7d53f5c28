/**
 * MTA-STS (RFC 8461) as a security policy: the `_mta-sts.<domain>` TXT record (exactly one `v=STSv1; id=…`),
 * the policy fetched over HTTPS (mta_sts_fetch.ts) and cached durably until `max_age`, refetched when the id
 * changes, and refreshed in the background before it expires (§3.3, §5.1: once half its `max_age` — at most a
 * day — has passed, without delaying the delivery that noticed); a failed fetch keeps the cached policy. One
 * fetch per domain and id runs at a time (concurrent deliveries share it), and a failed one is not repeated for
 * that id for five minutes, so a dead policy host costs one timeout, not one per delivery. `enforce`: MX hosts
 * not in the policy are not tried, the
 * others require TLS 1.2+ with a PKIX certificate for the MX name; `testing`: delivery as usual, the outcome
 * is only reported; `none`: no policy. DANE takes precedence where it is usable (§2). Decisions are per
 * recipient domain, so a policy never leaks to another domain sharing the MX hosts.
 */

import type { Resolver } from "../../dns/resolver.ts";
import type { TlsClientContext } from "../../tls/client.ts";
import type { SecurityPolicy } from "./engine.ts";
import { fetchStsPolicy, StsFetchError } from "./mta_sts_fetch.ts";
import { writeAtomic } from "../../core/atomic_file.ts";

/** A parsed policy (RFC 8461 §3.2). */
export interface StsPolicy {
  mode: "enforce" | "testing" | "none";
  /** MX patterns: names or `*.` wildcards */
  mx: string[];
  /** Seconds */
  maxAge: number;
}

/** Parses a policy body; throws an Error naming the problem. */
export function parseStsPolicy(text: string): StsPolicy {
  const fields = new Map<string, string[]>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "") continue;
    const c = line.indexOf(":");
    if (c <= 0) throw new Error(`malformed policy line "${line.slice(0, 60)}"`);
    const k = line.slice(0, c).trim();
    const v = line.slice(c + 1).trim();
    fields.set(k, [...(fields.get(k) ?? []), v]);
  }
  if (fields.get("version")?.[0] !== "STSv1") throw new Error("policy version is not STSv1");
  const mode = fields.get("mode")?.[0];
  if (mode !== "enforce" && mode !== "testing" && mode !== "none") {
    throw new Error(`bad policy mode "${mode}"`);
  }
  const maxAgeText = fields.get("max_age")?.[0] ?? "";
  if (!/^\d{1,10}$/.test(maxAgeText)) throw new Error(`bad max_age "${maxAgeText}"`);
  const maxAge = Math.min(Number(maxAgeText), 31_557_600);
  const mx = (fields.get("mx") ?? []).map((m) => m.toLowerCase().replace(/\.$/, ""));
  if (mode !== "none" && mx.length === 0) throw new Error("policy has no mx");
  return { mode, mx, maxAge };
}

/** Whether MX host `host` matches a policy pattern (a `*.` wildcard covers exactly one label, §4.1). */
export function mxMatches(pattern: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  if (!pattern.startsWith("*.")) return pattern === h;
  const dot = h.indexOf(".");
  return dot > 0 && h.slice(dot + 1) === pattern.slice(2);
}

/** The id of the one `v=STSv1` TXT record, or undefined when there is none or more than one (§3.1). */
export function stsRecordId(records: string[]): string | undefined {
  const sts = records.filter((r) => /^v=STSv1\s*(;|$)/.test(r.trim()));
  if (sts.length !== 1) return undefined;
  const m = /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(;|$)/.exec(sts[0]);
  return m?.[1];
}

interface CacheEntry {
  id: string;
  policy: StsPolicy;
  /** ms since epoch */
  fetchedAt: number;
}

/** The durable policy cache: a JSON file replaced atomically on every change. */
export class StsCache {
  #file?: string;
  #entries = new Map<string, CacheEntry>();
  #writing: Promise<void> = Promise.resolve();

  /** Loads `file` if it exists (a missing or unreadable file is an empty cache). */
  constructor(file?: string) {
    this.#file = file;
    if (!file) return;
    try {
      const data = JSON.parse(Deno.readTextFileSync(file)) as Record<string, CacheEntry>;
      for (const [k, v] of Object.entries(data)) this.#entries.set(k, v);
    } catch { /* none yet */ }
  }

  /** The cached, unexpired policy of `domain`. */
  get(domain: string, now = Date.now()): CacheEntry | undefined {
    const e = this.#entries.get(domain);
    if (!e) return undefined;
    if (now > e.fetchedAt + e.policy.maxAge * 1000) {
      this.#entries.delete(domain);
      return undefined;
    }
    return e;
  }

  /** Stores (and persists) a policy. */
  async set(domain: string, entry: CacheEntry): Promise<void> {
    this.#entries.set(domain, entry);
    await this.#persist();
  }

  #persist(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    const text = JSON.stringify(Object.fromEntries(this.#entries));
    this.#writing = this.#writing.then(() => writeAtomic(file, new TextEncoder().encode(text))).catch(
      () => {},
    );
    return this.#writing;
  }
}

/** A cached policy is refreshed once this much of its max_age has passed (RFC 8461 §3.3). */
function refreshDue(entry: { policy: StsPolicy; fetchedAt: number }, now: number): boolean {
  return now - entry.fetchedAt >= Math.min(entry.policy.maxAge * 500, REFRESH_AT_MOST_MS);
}

/** A policy is refreshed at least daily, whatever its max_age. */
const REFRESH_AT_MOST_MS = 86_400_000;
/** After a failed fetch (a refresh or a new id), the same id is fetched again no sooner than this. */
export const FETCH_RETRY_MS = 300_000;

/** MTA-STS settings (`delivery.mtaSts`). */
export interface MtaStsOptions {
  resolver: Resolver;
  /** PKIX trust for policy hosts (made on first use) */
  tlsContext: () => TlsClientContext;
  cache: StsCache;
  port: number;
  timeoutMs: number;
  /** Reports a fetch or validation failure (logged; TLS-RPT) */
  onFailure?: (domain: string, kind: string, message: string) => void;
  /** The clock (ms since the epoch); tests move it */
  now?: () => number;
}

/** The MTA-STS policy, plus a way to wait for background refreshes. */
export interface MtaStsPolicy extends SecurityPolicy {
  /** Settles when every background refresh started so far has ended */
  refreshes(): Promise<void>;
}

/** The MTA-STS policy. */
export function mtaStsPolicy(opts: MtaStsOptions): MtaStsPolicy {
  const now = opts.now ?? Date.now;
  /** Fetches in flight (refreshes and new ids), by domain and id: concurrent callers share one */
  const inflight = new Map<string, Promise<StsPolicy>>();
  /** The last failed fetch of each domain: its id and when */
  const failed = new Map<string, { id: string; at: number }>();

  /** Fetches, parses and caches the policy of `domain` under `id`; reports and rethrows a failure. */
  async function fetchPolicy(domain: string, id: string): Promise<StsPolicy> {
    try {
      const text = await fetchStsPolicy(domain, {
        resolver: opts.resolver,
        tlsContext: opts.tlsContext(),
        port: opts.port,
        timeoutMs: opts.timeoutMs,
      });
      const policy = parseStsPolicy(text);
      await opts.cache.set(domain, { id, policy, fetchedAt: now() });
      return policy;
    } catch (err) {
      const kind = err instanceof StsFetchError ? err.kind : "sts-policy-invalid";
      opts.onFailure?.(domain, kind, (err as Error).message);
      throw err;
    }
  }

  /** Whether fetching `domain`'s policy under `id` failed less than FETCH_RETRY_MS ago. */
  function failedRecently(domain: string, id: string): boolean {
    const f = failed.get(domain);
    return f !== undefined && f.id === id && now() - f.at < FETCH_RETRY_MS;
  }

  /** The fetch of `domain` under `id`: the one in flight if there is one, else a new one. */
  function sharedFetch(domain: string, id: string): Promise<StsPolicy> {
    const key = `${domain} ${id}`;
    const running = inflight.get(key);
    if (running) return running;
    const run = fetchPolicy(domain, id).then((policy) => {
      failed.delete(domain);
      return policy;
    }, (err) => {
      failed.set(domain, { id, at: now() });
      throw err;
    }).finally(() => inflight.delete(key));
    inflight.set(key, run);
    return run;
  }

  /** Starts a background refresh of `domain`'s cached policy (joining one that runs) unless one failed recently. */
  function refresh(domain: string, id: string): void {
    if (failedRecently(domain, id)) return;
    // A failure leaves the cached policy in force until it expires.
    sharedFetch(domain, id).catch(() => {});
  }

  /** The policy in force for `domain`, fetching when the TXT id is new. */
  async function policyFor(domain: string, signal?: AbortSignal): Promise<StsPolicy | undefined> {
    const cached = opts.cache.get(domain, now());
    let id: string | undefined;
    try {
      const txt = await opts.resolver.txt(`_mta-sts.${domain}`, { signal });
      id = stsRecordId(txt.records);
    } catch {
      return cached?.policy; // DNS trouble: the cached policy stays in force (§5.1)
    }
    if (id === undefined) return cached?.policy;
    if (cached && cached.id === id) {
      if (refreshDue(cached, now())) refresh(domain, id);
      return cached.policy;
    }
    // A new id whose fetch just failed: the cached policy stays in force without another wait (§5.1).
    if (failedRecently(domain, id)) return cached?.policy;
    try {
      return await sharedFetch(domain, id);
    } catch {
      return cached?.policy;
    }
  }

  return {
    refreshes: async () => {
      while (inflight.size) await Promise.allSettled(inflight.values());
    },
    name: "mta-sts",
    published: true,
    async prepareDomain(info) {
      if (!info.viaMx) return undefined;
      const policy = await policyFor(info.domain, info.signal);
      if (!policy || policy.mode === "none") return undefined;
      return function mtaSts(req, target) {
        if (req.dane) return; // usable DANE takes precedence (RFC 8461 §2)
        const listed = policy.mx.some((p) => mxMatches(p, target.name));
        req.stsPolicy = policy;
        if (policy.mode === "testing") {
          req.mtaSts = "testing";
          return;
        }
        req.mtaSts = "enforce";
        if (!listed) {
          req.fail("mta-sts", `${target.name} is not in the policy of ${info.domain}`, "MTA-STS");
          return;
        }
        req.raiseMx(1, "mta-sts");
        req.raiseTls(2, "mta-sts");
        req.minTls12 = true;
        req.checkNames = true;
      };
    },
  };
}
