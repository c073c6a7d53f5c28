/**
 * The smtp transport's connection set-up: tcp:connect (vetoable) → greeting → smtp:connect (vetoable) → EHLO →
 * STARTTLS → certificate verification (DANE, or PKIX with RFC 6125 names; tls:cert vetoes; OCSP) → EHLO
 * again → AUTH when the route has credentials (only over TLS: without it the host is deferred). What each
 * host must reach comes from the security engine (`security/`); this file only enforces it: a required level
 * that is not met — no STARTTLS offered, a failed handshake, an unauthenticated certificate — defers the host
 * and never falls back to clear text.
 */

import { HostList, HostListError, type HostListSpec } from "../core/host_list.ts";
import type { Resolver } from "../dns/resolver.ts";
import { danePolicy } from "./security/dane.ts";
import { isIp } from "../core/ip.ts";
import type { EventBus } from "../events/bus.ts";
import type { HostFacts, OutboundTlsFacts } from "../events/types.ts";
import { SmtpClient, SmtpClientError } from "../smtp/client.ts";
import { type TlsClientContext, tlsConnect } from "../tls/client.ts";
import type { RouteSpec, TargetHost } from "./routing.ts";
import { errorMessage } from "../core/error_message.ts";
import { SecurityEngine, type SecurityPolicy } from "./security/engine.ts";
import { type Achieved, type Requirement, type SecurityTrace } from "./security/levels.ts";
import { localListsPolicy } from "./security/local_lists.ts";

/** A host-level failure: try the next host, retry this one later. */
export class HostError extends Error {
  /**
   * Short code for msg:host:defer (ECONNREFUSED, ETIMEDOUT, TLS, SMTP_4XX, VETO, HOSTLIST — a host-list
   * function hung or failed, …)
   */
  readonly errno: string;
  /** The TLS handshake failed where TLS was optional: the host may be tried again in clear */
  readonly tryClear: boolean;
  /** The security decision when a policy refused the host or a requirement was not met */
  security?: SecurityTrace;
  /** Our address on the session, when one was open (TLS-RPT's sending-mta-ip) */
  sendingIp?: string;
  /** The TLS session, when the handshake completed before the host failed (its certificate, CV) */
  tls?: OutboundTlsFacts;
  /**
   * A security refusal that a retry would meet again (a certificate or DANE mismatch, no STARTTLS or
   * REQUIRETLS offered, an MX no policy authenticates); false for temporary ones (DNS errors, timeouts,
   * resets, a failed handshake)
   */
  readonly definite: boolean;
  constructor(
    message: string,
    errno: string,
    options?: {
      cause?: unknown;
      tryClear?: boolean;
      security?: SecurityTrace;
      sendingIp?: string;
      definite?: boolean;
      tls?: OutboundTlsFacts;
    },
  ) {
    super(message, options);
    this.name = "HostError";
    this.errno = errno;
    this.tryClear = options?.tryClear ?? false;
    this.security = options?.security;
    this.sendingIp = options?.sendingIp;
    this.tls = options?.tls;
    this.definite = options?.definite ?? false;
  }
}

/** Outbound transport settings resolved for one route. */
export interface TransportPolicy {
  heloName: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  dataTimeoutMs: number;
  tlsContext?: TlsClientContext;
  /** The security policies that decide what each host must satisfy */
  security: SecurityEngine;
  hostsTryPrdr: HostList;
  /** Credentials for AUTH (route.auth) */
  auth?: { user: string; password: string };
}

/** An open, greeted session ready for MAIL. */
export interface OpenSession {
  client: SmtpClient;
  target: TargetHost;
  tls?: OutboundTlsFacts;
  /** What the session achieved (checked before a pooled session carries another delivery) */
  achieved: Achieved;
  sendingIp?: string;
  sendingPort?: number;
  /** Whether PRDR may be used with this host */
  tryPrdr: boolean;
  /**
   * The record of the last transaction's outcomes on this session, while it is being written: the next
   * transaction sends its message data only once it has settled (see deliver.ts)
   */
  recorded?: Promise<void>;
  /** Closes (after QUIT when possible) and fires tcp:close */
  close(): Promise<void>;
}

/** Builds a transport policy for a route from the delivery defaults and the route's overrides. */
export function transportPolicy(
  delivery: Record<string, unknown> & {
    heloName?: string;
    connectTimeout: number;
    commandTimeout: number;
    dataTimeout: number;
  },
  route: RouteSpec,
  hostname: string,
  tlsContext?: TlsClientContext,
  extraPolicies: readonly SecurityPolicy[] = [],
  opts: { route?: number; timeoutMs?: number; resolver?: Resolver } = {},
): TransportPolicy {
  const spec = (key: keyof RouteSpec & keyof typeof delivery) =>
    (route[key] ?? delivery[key] ?? []) as HostListSpec;
  // A list is named by where it was configured, for the log line when its function hangs or fails.
  const pick = (key: keyof RouteSpec & keyof typeof delivery) =>
    new HostList(spec(key), {
      name: route[key] !== undefined && opts.route !== undefined
        ? `routes[${opts.route}].${key}`
        : `delivery.${key}`,
      timeoutMs: opts.timeoutMs,
    });
  const policies: SecurityPolicy[] = [localListsPolicy({
    hostsRequireTls: pick("hostsRequireTls"),
    tlsVerifyHosts: pick("tlsVerifyHosts"),
    tlsTryVerifyHosts: pick("tlsTryVerifyHosts"),
    tlsVerifyCertHostnames: pick("tlsVerifyCertHostnames"),
    hostsRequestOcsp: pick("hostsRequestOcsp"),
    hostsRequireOcsp: pick("hostsRequireOcsp"),
    tlsVerifyNames: route.tlsVerifyNames,
  })];
  if (opts.resolver) {
    policies.push(danePolicy(opts.resolver, {
      hostsTryDane: pick("hostsTryDane"),
      hostsRequireDane: pick("hostsRequireDane"),
      dnssecRequestDomains: pick("dnssecRequestDomains"),
      dnssecRequireDomains: pick("dnssecRequireDomains"),
    }));
  }
  policies.push(...extraPolicies);
  return {
    heloName: delivery.heloName ?? hostname,
    connectTimeoutMs: delivery.connectTimeout,
    commandTimeoutMs: delivery.commandTimeout,
    dataTimeoutMs: delivery.dataTimeout,
    tlsContext,
    security: new SecurityEngine(policies),
    hostsTryPrdr: pick("hostsTryPrdr"),
    auth: route.auth,
  };
}

function errnoOf(err: unknown): string {
  if (err instanceof HostListError) return "HOSTLIST";
  if (err instanceof Deno.errors.ConnectionRefused) return "ECONNREFUSED";
  if (err instanceof Deno.errors.TimedOut) return "ETIMEDOUT";
  if (err instanceof Deno.errors.ConnectionReset) return "ECONNRESET";
  if (err instanceof SmtpClientError) {
    if (err.kind === "timeout") return "ETIMEDOUT";
    if (err.kind === "connection") return "ECONNRESET";
    return err.code >= 500 ? "SMTP_5XX" : "SMTP_4XX";
  }
  return "EIO";
}

/** Any failure while talking to a host, as a HostError with an errno-like code. */
export function hostErrorOf(err: unknown): HostError {
  if (err instanceof HostError) return err;
  return new HostError(errorMessage(err), errnoOf(err), { cause: err });
}

async function connectTcp(target: TargetHost, timeoutMs: number): Promise<Deno.TcpConn> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: target.ip, port: target.port, transport: "tcp" });
  try {
    const conn = await Promise.race([
      attempt,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Deno.errors.TimedOut(`connect timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    // Commands go out in small pipelined batches: no Nagle delay waiting for an ACK.
    conn.setNoDelay(true);
    return conn;
  } catch (err) {
    attempt.then((c) => c.close()).catch(() => {});
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Options for one `openSession`. */
export interface OpenOptions {
  /** What the security policies require of this host */
  requirement: Requirement;
  /** Do not start TLS (the cleartext retry after a failed handshake, only at TLS level none) */
  noTls?: boolean;
}

/** Opens a session to `target`; throws HostError for anything that should move on to the next host. */
export async function openSession(
  target: TargetHost,
  policy: TransportPolicy,
  events: EventBus,
  id: string | undefined,
  opts: OpenOptions,
): Promise<OpenSession> {
  const req = opts.requirement;
  const facts: HostFacts = { host: target.name, address: target.ip, port: target.port };
  const subject = { ip: target.ip, name: target.name };
  const veto = await events.dispatch("tcp:connect", { ...facts, id });
  if (veto) throw new HostError(`connection vetoed by tcp:connect: ${veto}`, "VETO");
  let conn: Deno.TcpConn;
  try {
    conn = await connectTcp(target, policy.connectTimeoutMs);
  } catch (err) {
    throw hostErrorOf(err);
  }
  const local = conn.localAddr as Deno.NetAddr;
  let closed = false;
  const timeouts = {
    greeting: policy.commandTimeoutMs,
    command: policy.commandTimeoutMs,
    mail: policy.commandTimeoutMs,
    rcpt: policy.commandTimeoutMs,
    dataInit: policy.commandTimeoutMs,
    dataBlock: policy.dataTimeoutMs,
    dataFinal: policy.dataTimeoutMs,
  };
  const client = new SmtpClient(conn, { timeouts });
  const close = async () => {
    if (closed) return;
    closed = true;
    if (!client.closed) await client.quit().catch(() => {});
    client.close();
    events.emit("tcp:close", { ...facts, id });
  };
  /** A requirement not met: the host is deferred, naming the policy that required it. */
  const unmet = (message: string, cause?: unknown, definite = true, tls?: OutboundTlsFacts) =>
    new HostError(`${req.tlsBy ?? "tls"}: ${message}`, "TLS", {
      cause,
      security: req.trace(),
      sendingIp: local.hostname,
      definite,
      tls,
    });
  try {
    const banner = await client.greeting();
    const refuse = await events.dispatch("smtp:connect", { ...facts, banner: banner.lines.join(" "), id });
    if (refuse) throw new HostError(`connection closed by smtp:connect: ${refuse}`, "VETO");
    const caps = await client.ehlo(policy.heloName);
    let tls: OutboundTlsFacts | undefined;
    const achieved: Achieved = { tls: 0, dane: false, tls12: false, ocsp: false };
    if (caps.startTls && (req.tls > 0 || !opts.noTls)) {
      const named = !isIp(target.name);
      const dane = req.dane;
      // RFC 6125 reference identities: the host name, or for an IP-literal host its address (matched against
      // IP SANs), and the names the route lists in tlsVerifyNames. Under MTA-STS the MX name is always checked.
      const names = named ? [target.name, ...req.names] : [target.ip, ...req.names];
      const checkNames = req.checkNames || req.tls === 2 || req.mtaSts !== undefined;
      let tlsStream: Awaited<ReturnType<typeof tlsConnect>> | undefined;
      try {
        await client.startTls(async (s) => {
          tlsStream = await tlsConnect(s, {
            context: policy.tlsContext,
            serverName: dane ? dane.baseDomain : named ? target.name : undefined,
            verify: "record",
            names: checkNames ? names : [],
            requestOcsp: req.requestOcsp,
            requireOcsp: req.requireOcsp,
            dane: dane
              ? {
                tlsa: dane.tlsa.map((r) => ({ ...r, mtype: r.matchingType })),
                baseDomain: dane.baseDomain,
                names: dane.names,
              }
              : undefined,
            timeout: policy.connectTimeoutMs,
          });
          return tlsStream;
        });
      } catch (err) {
        // Like Exim's tls_tempfail_tryclear: a failed handshake is retried in clear only when nothing
        // requires TLS.
        // A failed handshake (reset, timeout, alert) is temporary: the host is deferred, not refused.
        if (req.tls > 0) throw unmet(`TLS session failed: ${errorMessage(err)}`, err, false);
        throw new HostError(`TLS session failed: ${errorMessage(err)}`, "TLS", {
          cause: err,
          tryClear: true,
        });
      }
      const t = tlsStream!;
      const v = t.verification;
      const chain = t.peerCertificates;
      let verified = v?.verified === true && v.nameMatched !== false;
      let why = v?.verifyError ??
        (v?.nameMatched === false ? `certificate does not match ${names.join(" or ")}` : undefined);
      for (const [depth, certificate] of chain.entries()) {
        const veto = await events.dispatch("tls:cert", {
          ...facts,
          depth,
          certificate,
          id,
          direction: "outbound",
        });
        if (veto) {
          verified = false;
          why = `refused by tls:cert at depth ${depth}: ${veto}`;
          break;
        }
      }
      const isDane = verified && v?.method === "dane";
      const tlsaUsage = isDane ? v?.daneUsage : undefined;
      achieved.tls = verified ? 2 : 1;
      achieved.dane = isDane;
      achieved.tlsaUsage = tlsaUsage;
      achieved.tls12 = /^TLS1\.[23]$/.test(t.info.version);
      achieved.ocsp = v?.ocsp?.ok === true;
      // DANE-TA(2) checks the TLSA base domain and MX names; PKIX checked a name only when names were given.
      achieved.named = verified && (isDane ? tlsaUsage === 2 : checkNames);
      // The session's TLS facts; also carried by a requirement's failure below, since the session did reach TLS
      // (metrics and the message page say so).
      const reached: OutboundTlsFacts = {
        ...t.info,
        peerCertificate: chain[0],
        peerChain: chain,
        cv: isDane ? "dane" : verified && (req.tryVerify || req.tls === 2) ? "yes" : "no",
        dane: isDane,
        tlsaUsage,
      };
      if (req.requireOcsp && !achieved.ocsp) {
        // A missing or unreachable OCSP response may come next time; a revoked certificate will not.
        const status = v?.ocsp?.status;
        throw unmet(
          `OCSP check failed: ${v?.ocsp?.reason ?? status ?? "no OCSP check"}`,
          undefined,
          status === "revoked",
          reached,
        );
      }
      if (req.tls === 2 && !verified) {
        if (dane) events.emit("dane:fail", { ...facts, id, error: why ?? "not authenticated" });
        throw unmet(`certificate verification failed: ${why}`, undefined, true, reached);
      }
      if (req.minTls12 && !achieved.tls12) {
        throw unmet(`TLS 1.2 or later required, got ${t.info.version}`, undefined, true, reached);
      }
      tls = reached;
      await client.ehlo(policy.heloName);
    } else if (req.tls > 0) {
      throw unmet(`TLS required but STARTTLS not offered by ${target.name} [${target.ip}]`);
    }
    if (policy.auth) {
      // A password never goes in clear: without TLS this host cannot be used for this route.
      if (!tls) throw new HostError("AUTH needs TLS but the session is not encrypted", "AUTH");
      try {
        await client.auth(policy.auth.user, policy.auth.password);
      } catch (err) {
        throw new HostError(`AUTH failed: ${errorMessage(err)}`, "AUTH", { cause: err });
      }
    }
    return {
      client,
      target,
      tls,
      achieved,
      sendingIp: local.hostname,
      sendingPort: local.port,
      tryPrdr: await policy.hostsTryPrdr.match(subject),
      close,
    };
  } catch (err) {
    await close();
    throw hostErrorOf(err);
  }
}
