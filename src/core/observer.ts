/**
 * Internal hooks the rooms call at fixed points so metrics (src/admin/metrics.ts) can count what happens,
 * apart from the user-facing event bus (whose handlers run under timeouts and may veto). Every method is
 * synchronous, cheap and must not throw; labels are bounded (stages, routes, outcomes — never addresses).
 */

/** Where a message or command was refused. */
export type RejectStage =
  | "connect"
  | "helo"
  | "mail"
  | "rcpt"
  | "data"
  | "prdr"
  | "auth"
  | "protocol"
  | "spool";

/** Outcome of a delivery attempt for one recipient. */
export type DeliveryOutcome = "delivered" | "deferred" | "bounced";

/** Where an outbound TLS decision was made. */
export interface TlsDetail {
  /** The recipient domain */
  destination: string;
  host?: string;
  version?: string;
  cipher?: string;
  /** The peer's reply or the error */
  text: string;
  /**
   * The security decision (`TLS=` in the log): what authenticated the session or what the failed policy
   * demanded — dane, mta-sts(enforce), mta-sts(testing), pkix, opportunistic, encrypted, none
   */
  policy?: string;
  /** The session reached TLS or delivered; false when it failed before (refused connection, greeting) */
  reached: boolean;
}

/** The hooks; rooms take an optional Observer and call what applies. */
export interface Observer {
  /** A TCP connection was accepted (`accepted`), refused by limits (`refused`) or ended (`closed`). */
  connection(what: "accepted" | "refused" | "closed"): void;
  /** A message became durable and got its 250. */
  received(info: { tls: boolean; auth: boolean; size: number }): void;
  /** A reply of class 4xx/5xx refused something at `stage`. */
  rejected(stage: RejectStage, code: number): void;
  /** An AUTH attempt ended. */
  auth(outcome: "success" | "failure" | "tempfail" | "blocked"): void;
  /** One recipient's delivery attempt ended; `sinceReceivedMs` only for delivered ones. */
  delivery(route: string, outcome: DeliveryOutcome, sinceReceivedMs?: number): void;
  /**
   * An outbound attempt's TLS by Exim's CV= (yes, no, dane) or "none" without TLS; `detail` names the
   * destination for the dashboard's per-destination view (metrics take only its policy's base name).
   */
  outboundTls(cv: "yes" | "no" | "dane" | "none", detail?: TlsDetail): void;
  /** An inbound TLS handshake's result. */
  inboundTls(outcome: "ok" | "failed"): void;
  /** One DNS lookup: its record type, outcome and how long it took. */
  dnsQuery(type: string, outcome: "ok" | "nxdomain" | "error", seconds: number): void;
  /** A check's verdict (rate limits, scanners, SPF/DKIM/DMARC…): its configured name, the stage, the action. */
  checkVerdict(check: string, stage: string, action: string): void;
  /** The time `store()` took to make a message durable (commit latency as a client waits for it). */
  spoolStore(seconds: number): void;
}

/** An observer that ignores everything (the default). */
export const noObserver: Observer = {
  connection() {},
  received() {},
  rejected() {},
  auth() {},
  delivery() {},
  outboundTls() {},
  inboundTls() {},
  dnsQuery() {},
  checkVerdict() {},
  spoolStore() {},
};

/** One observer that calls each of `observers` in turn. */
export function combineObservers(...observers: Observer[]): Observer {
  const each = <K extends keyof Observer>(k: K) => (...args: Parameters<Observer[K]>) => {
    for (const o of observers) (o[k] as (...a: Parameters<Observer[K]>) => void)(...args);
  };
  return {
    connection: each("connection"),
    received: each("received"),
    rejected: each("rejected"),
    auth: each("auth"),
    delivery: each("delivery"),
    outboundTls: each("outboundTls"),
    inboundTls: each("inboundTls"),
    dnsQuery: each("dnsQuery"),
    checkVerdict: each("checkVerdict"),
    spoolStore: each("spoolStore"),
  };
}
