/**
 * Prometheus metrics (text exposition format 0.0.4) through prom-client, one registry per Ferry, fed by the
 * internal Observer hooks. Labels are bounded: stages, reply classes, routes, outcomes — never addresses.
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { DeliveryOutcome, Observer, RejectStage, TlsDetail } from "../core/observer.ts";

/** Values read at scrape time from the running rooms. */
export interface MetricSources {
  /** Messages in the queue by state */
  queueByState?: () => Promise<Record<string, number>>;
  /** Age of each certificate set's stapled OCSP response */
  stapleAges?: () => { set: number; seconds?: number }[];
}

/** The values of `ferry_outbound_tls_total`'s `policy` label. */
const TLS_POLICY_LABELS = [
  "dane",
  "mta-sts",
  "pkix",
  "opportunistic",
  "encrypted",
  "none",
  "other",
] as const;

/**
 * The `policy` label of an outbound TLS outcome: the security decision's base name (`mta-sts(enforce)` →
 * `mta-sts`), one of {@link TLS_POLICY_LABELS}; without a decision, what the CV shows.
 */
export function tlsPolicyLabel(cv: "yes" | "no" | "dane" | "none", policy?: string): string {
  if (policy === undefined) {
    return cv === "dane" ? "dane" : cv === "yes" ? "pkix" : cv === "no" ? "opportunistic" : "none";
  }
  const base = policy.replace(/\(.*$/, "");
  return (TLS_POLICY_LABELS as readonly string[]).includes(base) ? base : "other";
}

const LATENCY = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const DELIVERY = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400];

/** The metrics of one Ferry, and the Observer that feeds them. */
export class FerryMetrics implements Observer {
  readonly registry = new Registry();
  #connections;
  #open;
  #received;
  #rejected;
  #auth;
  #deliveries;
  #deliverySeconds;
  #outboundTls;
  #inboundTls;
  #dnsQueries;
  #dnsSeconds;
  #spoolStore;
  #spoolCommitSeconds;
  #spoolBatchSize;
  #spoolCommits;
  #spoolWrites;
  #verdicts;

  constructor(sources: MetricSources = {}) {
    const registers = [this.registry];
    this.#connections = new Counter({
      name: "ferry_connections_total",
      help: "Inbound SMTP connections accepted, or refused by connection limits",
      labelNames: ["result"] as const,
      registers,
    });
    this.#open = new Gauge({
      name: "ferry_connections_open",
      help: "Inbound SMTP connections open",
      registers,
    });
    this.#received = new Counter({
      name: "ferry_messages_received_total",
      help: "Messages made durable and acknowledged with 250",
      labelNames: ["tls", "auth"] as const,
      registers,
    });
    this.#rejected = new Counter({
      name: "ferry_messages_rejected_total",
      help: "Refusals (4xx/5xx replies) by stage and reply class",
      labelNames: ["stage", "class"] as const,
      registers,
    });
    this.#auth = new Counter({
      name: "ferry_auth_attempts_total",
      help: "SMTP AUTH attempts by outcome (blocked: refused by the failure limit)",
      labelNames: ["outcome"] as const,
      registers,
    });
    this.#deliveries = new Counter({
      name: "ferry_deliveries_total",
      help: "Recipient delivery attempts by route and outcome",
      labelNames: ["route", "outcome"] as const,
      registers,
    });
    this.#deliverySeconds = new Histogram({
      name: "ferry_delivery_seconds",
      help: "Time from the 250 that accepted a message to a recipient's delivery",
      labelNames: ["route"] as const,
      buckets: DELIVERY,
      registers,
    });
    this.#outboundTls = new Counter({
      name: "ferry_outbound_tls_total",
      help:
        "Outbound recipient attempts by the TLS policy that authenticated the session or that it failed " +
        "(dane, mta-sts, pkix, opportunistic, encrypted, none) and CV (yes, no, dane, none)",
      labelNames: ["policy", "cv"] as const,
      registers,
    });
    this.#inboundTls = new Counter({
      name: "ferry_inbound_tls_handshakes_total",
      help: "Inbound TLS handshakes by result",
      labelNames: ["result"] as const,
      registers,
    });
    this.#dnsQueries = new Counter({
      name: "ferry_dns_queries_total",
      help: "DNS lookups by record type and outcome",
      labelNames: ["type", "outcome"] as const,
      registers,
    });
    this.#dnsSeconds = new Histogram({
      name: "ferry_dns_query_seconds",
      help: "DNS lookup latency",
      labelNames: ["type"] as const,
      buckets: LATENCY,
      registers,
    });
    this.#verdicts = new Counter({
      name: "ferry_check_verdicts_total",
      help: "Check verdicts (rate limits, rspamd, DCC, SPF, DKIM, DMARC, …) by check name, stage and action",
      labelNames: ["check", "stage", "verdict"] as const,
      registers,
    });
    this.#spoolStore = new Histogram({
      name: "ferry_spool_store_seconds",
      help: "Time to make one accepted message durable (group commit included)",
      buckets: LATENCY,
      registers,
    });
    this.#spoolCommitSeconds = new Histogram({
      name: "ferry_spool_commit_seconds",
      help: "Latency of one spool group commit (the transaction and its sync)",
      buckets: LATENCY,
      registers,
    });
    this.#spoolBatchSize = new Histogram({
      name: "ferry_spool_commit_batch_size",
      help: "Writes carried by one spool group commit",
      buckets: BATCH,
      registers,
    });
    new Gauge({
      name: "ferry_queue_messages",
      help: "Messages in the queue by state",
      labelNames: ["state"] as const,
      registers,
      async collect() {
        if (!sources.queueByState) return;
        this.reset();
        for (const [state, n] of Object.entries(await sources.queueByState())) this.set({ state }, n);
      },
    });
    this.#spoolCommits = new Counter({
      name: "ferry_spool_commits_total",
      help: "Spool transactions committed (group commits)",
      registers,
    });
    this.#spoolWrites = new Counter({
      name: "ferry_spool_commit_writes_total",
      help: "Spool writes carried by those commits (rate of writes / rate of commits = mean batch size)",
      registers,
    });
    new Gauge({
      name: "ferry_ocsp_staple_age_seconds",
      help: "Age of the stapled OCSP response per certificate set (absent when nothing is stapled)",
      labelNames: ["set"] as const,
      registers,
      collect() {
        this.reset();
        for (const a of sources.stapleAges?.() ?? []) {
          if (a.seconds !== undefined) this.set({ set: String(a.set) }, a.seconds);
        }
      },
    });
  }

  /** The scrape body. */
  async text(): Promise<string> {
    return await this.registry.metrics();
  }

  /** The content type of the scrape body. */
  get contentType(): string {
    return this.registry.contentType;
  }

  connection(what: "accepted" | "refused" | "closed"): void {
    if (what === "closed") return this.#open.dec();
    this.#connections.inc({ result: what });
    if (what === "accepted") this.#open.inc();
  }
  received(info: { tls: boolean; auth: boolean }): void {
    this.#received.inc({ tls: String(info.tls), auth: String(info.auth) });
  }
  rejected(stage: RejectStage, code: number): void {
    this.#rejected.inc({ stage, class: `${Math.floor(code / 100)}xx` });
  }
  auth(outcome: "success" | "failure" | "tempfail" | "blocked"): void {
    this.#auth.inc({ outcome });
  }
  delivery(route: string, outcome: DeliveryOutcome, sinceReceivedMs?: number): void {
    this.#deliveries.inc({ route, outcome });
    if (sinceReceivedMs !== undefined) this.#deliverySeconds.observe({ route }, sinceReceivedMs / 1000);
  }
  outboundTls(cv: "yes" | "no" | "dane" | "none", detail?: TlsDetail): void {
    if (detail && !detail.reached) return;
    this.#outboundTls.inc({ policy: tlsPolicyLabel(cv, detail?.policy), cv });
  }
  inboundTls(outcome: "ok" | "failed"): void {
    this.#inboundTls.inc({ result: outcome });
  }
  dnsQuery(type: string, outcome: "ok" | "nxdomain" | "error", seconds: number): void {
    this.#dnsQueries.inc({ type, outcome });
    this.#dnsSeconds.observe({ type }, seconds);
  }
  checkVerdict(check: string, stage: string, action: string): void {
    this.#verdicts.inc({ check, stage, verdict: action });
  }
  spoolStore(seconds: number): void {
    this.#spoolStore.observe(seconds);
  }
  /** One group commit: its latency and the writes it carried. */
  spoolCommit(seconds: number, writes: number): void {
    this.#spoolCommitSeconds.observe(seconds);
    this.#spoolBatchSize.observe(writes);
    this.#spoolCommits.inc();
    this.#spoolWrites.inc(writes);
  }
}
