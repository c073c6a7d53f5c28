/**
 * One delivery attempt for a group of recipients that share a route and a destination: try the hosts in
 * order (skipping those in back-off), send one transaction, and classify every recipient (RFC 5321 4.2.1):
 * a host error (connect, greeting, TLS, 4xx MAIL, 421 to any command, dropped connection) moves on to the next
 * host; a 5xx MAIL fails the message for the group; per-recipient 4xx/5xx decide only that recipient.
 */

import type { Envelope, Recipient } from "../core/envelope.ts";
import type { Reply } from "../core/reply.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { EventBus } from "../events/bus.ts";
import type { HostFacts, OutboundTlsFacts, SecurityTrace } from "../events/types.ts";
import { replyText } from "../smtp/reply_parser.ts";
import { type SendResult, SmtpClientError } from "../smtp/client.ts";
import type { ConnectionPool } from "./connection_pool.ts";
import type { HostRetry } from "./host_retry.ts";
import {
  resolveTargets,
  type Route,
  type RouteDnssec,
  RoutingError,
  type SelfInfo,
  type TargetHost,
} from "./routing.ts";
import { HostError, hostErrorOf, type OpenSession, openSession, type TransportPolicy } from "./transport.ts";
import { errorMessage } from "../core/error_message.ts";
import { HostListError } from "../core/host_list.ts";
import type { DomainSecurity } from "./security/engine.ts";
import { policyOf, resultTypeOf, type TlsRptEvent } from "./security/tls_rpt.ts";
import { meets, type Requirement, traceOf } from "./security/levels.ts";

/** How one recipient fared. */
export interface RecipientOutcome {
  recipient: Recipient;
  kind: "delivered" | "failed" | "deferred";
  /** RFC 3463 status */
  status: string;
  /** Human text: the peer's reply or our reason */
  text: string;
  /** The reply when the peer gave one (for DSN Diagnostic-Code and logs) */
  reply?: Reply;
  /** Not the peer's doing: routing, loop, local refusal */
  internal?: boolean;
  host?: HostFacts;
  tls?: OutboundTlsFacts;
  /** The outbound security decision (TLS= in the log) */
  security?: SecurityTrace;
  sendingIp?: string;
  sendingPort?: number;
  /** DSN parameters were passed on (the next hop will report) */
  dsnPassed?: boolean;
  /** The stage the deciding reply came at */
  stage?: string;
}

/**
 * Host errors that are about transport security. A REQUIRETLS message fails (RFC 8689 §5) only when every host
 * failed with one of these definitely (`HostError.definite`); temporary ones (a DNS error, a failed
 * handshake) defer it like any other host error.
 */
const SECURITY_ERRNOS = new Set(["TLS", "DANE", "MTA-STS", "REQUIRETLS", "DNSSEC"]);

/** A local refusal because the peer does not offer REQUIRETLS (client_envelope.ts: 5.7.10). */
function isRequireTlsRefusal(err: SmtpClientError): boolean {
  return err.reply.enhanced === "5.7.10";
}

/**
 * The 421 that ended a transaction in which nothing was delivered (at RCPT, DATA or after the data), with
 * the stage it answered; undefined when there was none or the message was delivered to someone.
 */
function closedWith421(result: SendResult): { stage: string; reply: Reply } | undefined {
  if (result.delivered.length > 0 || result.mail.code >= 300) return undefined;
  // The first 421 is the one that ended it; every reply owed after it reads as the same 421.
  const rcpt = result.recipients.find((r) => r.rcpt?.code === 421);
  if (rcpt?.rcpt) return { stage: "rcpt", reply: rcpt.rcpt };
  if (result.dataCommand?.code === 421) return { stage: "data", reply: result.dataCommand };
  if (result.data?.code === 421) return { stage: "data", reply: result.data };
  return undefined;
}

/** Whether the message's header says `TLS-Required: No` (RFC 8689 §5). */
export function tlsRequiredNo(data: Uint8Array): boolean {
  const n = Math.min(data.length, 64 * 1024);
  const head = new TextDecoder().decode(data.subarray(0, n));
  const end = head.search(/\r?\n\r?\n/);
  const header = end < 0 ? head : head.slice(0, end);
  return /^TLS-Required:[ \t]*No[ \t]*$/im.test(header);
}

/** Everything a delivery attempt needs. */
export interface DeliverDeps {
  resolver: Resolver;
  pool: ConnectionPool;
  hostRetry: HostRetry;
  /** Try hosts in back-off too (an operator's retry of this message, `exim -M`) */
  ignoreBackoff?: boolean;
  events: EventBus;
  self: SelfInfo;
  /** Called for every session's TLS outcome (TLS-RPT, RFC 8460) */
  onTlsResult?(e: TlsRptEvent): void;
  /** Called for each host that failed (msg:host:defer is fired by the caller's logging) */
  onHostError(target: TargetHost, err: HostError): void;
  /**
   * Makes a transaction's outcomes durable; called as soon as the last reply of a transaction that reached
   * its recipients is in (MAIL answered). The connection goes back to the pool at once, but the next
   * transaction on it sends its message data only when this has settled: its envelope overlaps the write,
   * and a crash repeats at most one message a connection. Outcomes that were not recorded this way (no host
   * reached, MAIL refused with 4xx) are only returned.
   */
  record?(outcomes: RecipientOutcome[]): Promise<void>;
  /**
   * Aborts the attempt (graceful stop): no further host is tried and a session in use is closed, so its
   * recipients come back deferred (the caller, seeing the signal, leaves them as they were)
   */
  signal?: AbortSignal;
}

function statusOf(r: Reply, fallback: string): string {
  return r.enhanced ?? fallback;
}

function hostFacts(t: TargetHost): HostFacts {
  return { host: t.name, address: t.ip, port: t.port };
}

/** Delivers `recipients` of `envelope` for `domain` over `route`; throws only what `deps.record` throws. */
export async function deliverGroup(
  envelope: Envelope,
  data: Uint8Array,
  recipients: Recipient[],
  route: Route,
  domain: string,
  policy: TransportPolicy,
  deps: DeliverDeps,
): Promise<RecipientOutcome[]> {
  /**
   * Recipients a host refused for good (5xx to RCPT) before it closed the session with 421: their outcome
   * stands, and only the others go on to the next host.
   */
  const settled = new Map<Recipient, RecipientOutcome>();
  let pending = recipients;
  /** The outcomes of every recipient, in the order given: `outcomes` (for `pending`) and the settled ones. */
  const merged = (outcomes: RecipientOutcome[]): RecipientOutcome[] => {
    if (settled.size === 0) return outcomes;
    const of = new Map(outcomes.map((o) => [o.recipient, o]));
    return recipients.map((r) => settled.get(r) ?? of.get(r)!);
  };
  const all = (
    kind: RecipientOutcome["kind"],
    status: string,
    text: string,
    extra: Partial<RecipientOutcome> = {},
  ) => merged(pending.map((recipient): RecipientOutcome => ({ recipient, kind, status, text, ...extra })));

  let targets: TargetHost[];
  const dnssec: RouteDnssec = { viaMx: false, mxSecure: false };
  try {
    targets = await resolveTargets(route, domain, deps.resolver, deps.self, dnssec);
  } catch (err) {
    if (err instanceof RoutingError) {
      return all(err.temporary ? "deferred" : "failed", err.status, err.message, {
        internal: !err.temporary,
      });
    }
    return all("deferred", "4.3.0", `routing failed: ${errorMessage(err)}`, {
      internal: true,
    });
  }

  let security: DomainSecurity;
  try {
    security = await policy.security.prepare({
      domain,
      viaMx: dnssec.viaMx,
      mxSecure: dnssec.mxSecure,
      requireTls: envelope.requireTls === true,
      tlsOptional: tlsRequiredNo(data),
    });
  } catch (err) {
    return all("deferred", "4.7.5", `security policies failed: ${errorMessage(err)}`, { internal: true });
  }

  let lastError = "all hosts are in retry back-off";
  let lastStatus = "4.4.1";
  /** The host that failed last and its reply, if it gave one: the deferral names it (H=, Remote-MTA) */
  let lastHost: Partial<RecipientOutcome> = {};
  let lastSecurity: SecurityTrace | undefined;
  let hostFailures = 0;
  /** Hosts that refused for a security reason that a retry would meet again */
  let securityFailures = 0;
  /** Hosts that failed for any security reason, temporary or definite */
  let anySecurityFailures = 0;
  let tried = 0;
  /** What the security policies required of the host being tried (TLS-RPT names the policy) */
  let current: Requirement | undefined;
  /** Records a host's failure; `backoff` puts it in back-off (a refused MAIL does not). */
  const hostFailed = (
    target: TargetHost,
    he: HostError,
    status: string,
    backoff = true,
    reply?: Reply,
    tlsRpt = true,
  ) => {
    if (backoff) deps.hostRetry.failed(`${target.ip}:${target.port}`);
    deps.onHostError(target, he);
    lastError = he.message;
    lastStatus = status;
    lastHost = { host: hostFacts(target), reply, tls: he.tls };
    lastSecurity = he.security;
    // The session's TLS itself was fine when the peer only lacks REQUIRETLS: nothing for TLS-RPT.
    if (tlsRpt && he.security && SECURITY_ERRNOS.has(he.errno)) {
      deps.onTlsResult?.({
        domain,
        ...policyOf(he.security.policy, current ?? {}),
        receivingMx: target.name,
        receivingIp: target.ip,
        sendingIp: he.sendingIp,
        failure: resultTypeOf(he.message),
        detail: he.message,
      });
    }
    hostFailures++;
    if (SECURITY_ERRNOS.has(he.errno)) anySecurityFailures++;
    if (SECURITY_ERRNOS.has(he.errno) && he.definite) securityFailures++;
  };
  // dsnLasthop: DSN processing ends here (RFC 3461 parameters are not passed on; Ferry reports success).
  const lasthop = route.spec.dsnLasthop === true;
  // A cached connection the server has meanwhile closed (idle timeout: EOF or 421 at MAIL) says nothing
  // about the host: such a target is tried once more on a fresh connection.
  const queue = targets.map((target) => ({ target, retry: false }));
  for (let qi = 0; qi < queue.length; qi++) {
    if (deps.signal?.aborted) break;
    const { target, retry } = queue[qi];
    const hostKey = `${target.ip}:${target.port}`;
    if (!retry && !deps.ignoreBackoff && deps.hostRetry.inBackoff(hostKey)) continue;
    if (!retry) tried++;
    let req: Requirement;
    current = undefined;
    try {
      req = current = await security.requirementFor(target);
    } catch (err) {
      // A hung or failing host-list function is a local problem (errno HOSTLIST), not the host's.
      const lookup = err instanceof HostListError;
      hostFailed(
        target,
        new HostError(`security policy failed: ${errorMessage(err)}`, lookup ? "HOSTLIST" : "TLS"),
        lookup ? "4.3.0" : "4.7.5",
        false,
      );
      continue;
    }
    if (req.failure) {
      // Refused by a policy before connecting (e.g. not in the MTA-STS policy): no back-off, the host is fine.
      const he = new HostError(`${req.failure.policy}: ${req.failure.message}`, req.failure.errno, {
        security: req.trace(),
        definite: req.failure.definite,
      });
      hostFailed(target, he, "4.7.5", false);
      continue;
    }
    const poolKey = `${route.index}|${hostKey}|${target.name}`;
    let session: OpenSession;
    let fresh = false;
    const staleAgain = () => {
      if (fresh || retry) return false;
      queue.splice(qi + 1, 0, { target, retry: true });
      return true;
    };
    try {
      session = await deps.pool.acquire(poolKey, async () => {
        fresh = true;
        try {
          return await openSession(target, policy, deps.events, envelope.id, { requirement: req });
        } catch (err) {
          // The cleartext retry happens only when no policy requires TLS (openSession says so by tryClear).
          if (!(err instanceof HostError && err.tryClear) || req.tls > 0) throw err;
          deps.onHostError(target, err);
          return await openSession(target, policy, deps.events, envelope.id, {
            requirement: req,
            noTls: true,
          });
        }
      }, (s) => meets(s.achieved, req));
    } catch (err) {
      const he = hostErrorOf(err);
      // A veto or a hung host-list function is about this delivery, not the host: no back-off for others.
      const local = he.errno === "VETO" || he.errno === "HOSTLIST";
      // So is a requirement of this domain's policy that the host definitely did not meet (a certificate that
      // matches none of its TLSA records or not its MTA-STS names, no STARTTLS where it needs TLS): other
      // domains whose mail goes to the same address and port may well be delivered there.
      const unmetHere = he.security !== undefined && he.definite;
      hostFailed(target, he, he.errno === "TLS" ? "4.7.5" : local ? "4.3.0" : "4.4.1", !local && !unmetHere);
      continue;
    }
    // RFC 8460 §4.4: the counts are of sessions, so a reused pooled connection is not counted again (it was
    // when it was opened).
    if (fresh && req.mtaSts === "testing" && session.achieved.tls < 2) {
      // An MTA-STS policy in testing mode delivers anyway; TLS-RPT still reports what it would have refused.
      deps.onTlsResult?.({
        domain,
        ...policyOf("mta-sts(testing)", req),
        receivingMx: target.name,
        receivingIp: target.ip,
        sendingIp: session.sendingIp,
        failure: session.achieved.tls === 0 ? "starttls-not-supported" : "validation-failure",
      });
    } else if (fresh && session.achieved.tls > 0) {
      deps.onTlsResult?.({
        domain,
        ...policyOf(traceOf(session.achieved, req).policy, req),
        receivingMx: target.name,
        receivingIp: target.ip,
      });
    }
    const facts = {
      host: hostFacts(target),
      tls: session.tls,
      security: traceOf(session.achieved, req),
      sendingIp: session.sendingIp,
      sendingPort: session.sendingPort,
    };
    // Stopping, or an operator's bounce or delete: the connection is dropped at once. A QUIT would wait behind
    // the reply the peer owes (a tarpit, a slow RCPT check) for up to its own 10 s.
    const abort = () => {
      session.client.close();
      void session.close();
    };
    deps.signal?.addEventListener("abort", abort, { once: true });
    let recording = false;
    // The previous transaction on a reused connection may still be writing its outcomes.
    const previous = session.recorded;
    try {
      const result = await session.client.send(
        {
          from: envelope.sender,
          recipients: pending.map((r) =>
            lasthop ? { address: r.address } : { address: r.address, notify: r.notify, orcpt: r.orcpt }
          ),
          ret: lasthop ? undefined : envelope.ret,
          envid: lasthop ? undefined : envelope.envid,
          body: envelope.body,
          smtputf8: envelope.smtputf8,
          requireTls: envelope.requireTls,
          size: data.length,
          prdr: session.tryPrdr,
        },
        data,
        { beforeData: previous && (() => previous) },
      );
      if (result.mail.code >= 400 && result.mail.code < 500) {
        deps.pool.release(poolKey, session, !session.client.closed);
        if (result.mail.code === 421 && staleAgain()) continue;
        deps.hostRetry.succeeded(hostKey);
        // A temporary MAIL refusal is this host's problem: try the next one.
        const he = new HostError(`MAIL FROM refused: ${replyText(result.mail)}`, "SMTP_4XX");
        hostFailed(target, he, statusOf(result.mail, "4.0.0"), false, result.mail);
        continue;
      }
      const closing = closedWith421(result);
      if (closing) {
        // RFC 5321 §3.8: 421 is the server closing the channel, whatever command it answered: a host error
        // like a dropped connection, so the recipients it did not refuse for good go on to the next host.
        deps.pool.release(poolKey, session, false);
        result.recipients.forEach((r, i) => {
          if (r.stage !== "rcpt" || r.reply.code < 500) return;
          settled.set(pending[i], {
            recipient: pending[i],
            kind: "failed",
            status: statusOf(r.reply, "5.0.0"),
            text: replyText(r.reply),
            reply: r.reply,
            stage: r.stage,
            dsnPassed: result.dsnPassed && !lasthop,
            ...facts,
          });
        });
        pending = pending.filter((r) => !settled.has(r));
        const he = new HostError(`${closing.stage}: ${replyText(closing.reply)}`, "SMTP_421");
        hostFailed(target, he, statusOf(closing.reply, "4.0.0"), true, closing.reply);
        if (pending.length === 0) return merged([]);
        continue;
      }
      deps.hostRetry.succeeded(hostKey);
      const outcomes = pending.map((recipient, i): RecipientOutcome => {
        const r = result.recipients[i];
        const reply = r.reply;
        const kind = r.delivered ? "delivered" : reply.code >= 500 ? "failed" : "deferred";
        return {
          recipient,
          kind,
          status: statusOf(reply, kind === "delivered" ? "2.0.0" : kind === "failed" ? "5.0.0" : "4.0.0"),
          text: replyText(reply),
          reply,
          stage: r.stage,
          dsnPassed: result.dsnPassed && !lasthop,
          ...facts,
        };
      });
      // Saved at once; the next transaction on this connection holds its data until it is (DeliverDeps.record).
      recording = true;
      const recorded = deps.record?.(merged(outcomes)) ?? Promise.resolve();
      session.recorded = recorded.catch(() => {});
      deps.pool.release(poolKey, session, !session.client.closed);
      await recorded;
      return merged(outcomes);
    } catch (err) {
      if (recording) throw err;
      deps.pool.release(poolKey, session, false);
      if (
        err instanceof SmtpClientError && err.kind === "local" && envelope.requireTls &&
        isRequireTlsRefusal(err)
      ) {
        // RFC 8689 §4.2.1: a peer that does not offer REQUIRETLS is left (QUIT, the session was closed above)
        // and the next MX is tried; the message fails with 5.7.10 only when no host takes it.
        const he = new HostError(`requiretls: ${replyText(err.reply)} (${target.name})`, "REQUIRETLS", {
          security: facts.security,
          sendingIp: session.sendingIp,
          definite: true,
        });
        hostFailed(target, he, "4.7.10", false, undefined, false);
        continue;
      }
      if (err instanceof SmtpClientError && err.kind === "local") {
        // Ferry refused before sending (too big, extension missing): permanent for this message. The text
        // keeps the code and enhanced status Ferry chose (553 5.6.7 …), for the log line as for the report.
        return all("failed", statusOf(err.reply, "5.3.0"), replyText(err.reply), {
          internal: false,
          ...facts,
        });
      }
      if (
        err instanceof SmtpClientError && err.stage === "mail" && err.kind === "connection" && staleAgain()
      ) {
        continue;
      }
      // Our own abort says nothing about the host: no host error, no back-off for the other messages.
      if (deps.signal?.aborted) break;
      hostFailed(target, hostErrorOf(err), "4.4.2");
    } finally {
      deps.signal?.removeEventListener("abort", abort);
    }
  }
  if (tried === 0) return all("deferred", lastStatus, "retry time not reached for any host");
  // RFC 8689 §5: a REQUIRETLS message that no host could take securely is not delivered: 5.7.10. Only when
  // every host refused definitely; a temporary failure anywhere defers it (the retry rules end it at expiry).
  if (envelope.requireTls && securityFailures > 0 && securityFailures === hostFailures) {
    return all("failed", "5.7.10", `REQUIRETLS: ${lastError}`, { ...lastHost, security: lastSecurity });
  }
  // Held back only by security failures, some temporary: 4.7.10, which becomes 5.7.10 if the retry rules give
  // up on it (outcome.ts), as RFC 8689 §5 wants for a REQUIRETLS message that could not be sent securely.
  const status = envelope.requireTls && hostFailures > 0 && anySecurityFailures === hostFailures
    ? "4.7.10"
    : lastStatus;
  return all("deferred", status, lastError, { ...lastHost, security: lastSecurity });
}
