/**
 * What the dashboard shows besides the queue: deliveries and deferrals in 10-minute buckets over the last
 * 24 hours, and the last TLS outcome per destination domain (at most 1,000, least recently seen dropped).
 * In memory only: a restart starts both afresh.
 */

import { noObserver, type Observer, type TlsDetail } from "../core/observer.ts";

const BUCKET_MS = 10 * 60_000;
const BUCKETS = 144;
const MAX_DESTINATIONS = 1000;

/** One time bucket. */
export interface ActivityBucket {
  start: number;
  delivered: number;
  deferred: number;
  bounced: number;
}

/** The last TLS outcome seen for a destination domain. */
export interface DestinationTls extends TlsDetail {
  cv: "yes" | "no" | "dane" | "none";
  at: number;
  /** Attempts seen since start, by CV */
  counts: Record<string, number>;
}

/** Records activity from the observer hooks. */
export class Activity implements Observer {
  #buckets = new Map<number, ActivityBucket>();
  #destinations = new Map<string, DestinationTls>();
  #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  connection = noObserver.connection;
  received = noObserver.received;
  rejected = noObserver.rejected;
  auth = noObserver.auth;
  inboundTls = noObserver.inboundTls;
  dnsQuery = noObserver.dnsQuery;
  checkVerdict = noObserver.checkVerdict;
  spoolStore = noObserver.spoolStore;

  delivery(_route: string, outcome: "delivered" | "deferred" | "bounced"): void {
    const start = Math.floor(this.#now() / BUCKET_MS) * BUCKET_MS;
    let b = this.#buckets.get(start);
    if (!b) {
      b = { start, delivered: 0, deferred: 0, bounced: 0 };
      this.#buckets.set(start, b);
      for (const k of this.#buckets.keys()) if (k < start - BUCKETS * BUCKET_MS) this.#buckets.delete(k);
    }
    b[outcome]++;
  }

  outboundTls(cv: "yes" | "no" | "dane" | "none", detail?: TlsDetail): void {
    if (!detail) return;
    const key = detail.destination.toLowerCase();
    const prev = this.#destinations.get(key);
    const counts = prev?.counts ?? {};
    counts[cv] = (counts[cv] ?? 0) + 1;
    this.#destinations.delete(key);
    this.#destinations.set(key, { ...detail, destination: key, cv, at: this.#now(), counts });
    if (this.#destinations.size > MAX_DESTINATIONS) {
      this.#destinations.delete(this.#destinations.keys().next().value!);
    }
  }

  /** The buckets of the last `hours` hours, oldest first, empty ones included. */
  series(hours = 6): ActivityBucket[] {
    const n = Math.min(BUCKETS, Math.ceil((hours * 3_600_000) / BUCKET_MS));
    const last = Math.floor(this.#now() / BUCKET_MS) * BUCKET_MS;
    const out: ActivityBucket[] = [];
    for (let i = n - 1; i >= 0; i--) {
      const start = last - i * BUCKET_MS;
      out.push(this.#buckets.get(start) ?? { start, delivered: 0, deferred: 0, bounced: 0 });
    }
    return out;
  }

  /** Destinations, most recently seen first. */
  destinations(): DestinationTls[] {
    return [...this.#destinations.values()].reverse();
  }
}
