/**
 * The smtp transport's connection set-up: tcp:connect (vetoable) → greeting → smtp:connect (vetoable) → EHLO →
 * STARTTLS (opportunistic, or required by hostsRequireTls) → certificate verification (tlsVerifyHosts /
 * tlsTryVerifyHosts, RFC 6125 names per tlsVerifyCertHostnames, tls:cert vetoes, OCSP per hostsRequireOcsp)
 * → EHLO again → AUTH when the route has credentials (only over TLS: without it the host is deferred).
 * Security policies only raise what is required, never lower it.
 */

import { HostList } from "../core/host_list.ts";
import type { EventBus } from "../events/bus.ts";
import type { HostFacts, OutboundTlsFacts } from "../events/types.ts";
import { SmtpClient, SmtpClientError } from "../smtp/client.ts";
import { type TlsClientContext, tlsConnect } from "../tls/client.ts";
import type { RouteSpec, TargetHost } from "./routing.ts";
import { errorMessage } from "../core/error_message.ts";

/** A host-level failure: try the next host, retry this one later. */
export class HostError extends Error {
  /** Short code for msg:host:defer (ECONNREFUSED, ETIMEDOUT, TLS, SMTP_4XX, VETO, …) */
  readonly errno: string;
  /** The TLS handshake failed where TLS was optional: the host may be tried again in clear */
  readonly tryClear: boolean;
  constructor(message: string, errno: string, options?: { cause?: unknown; tryClear?: boolean }) {
    super(message, options);
    this.name = "HostError";
    this.errno = errno;
    this.tryClear = options?.tryClear ?? false;
  }
}

/** Outbound transport settings resolved for one route. */
export interface TransportPolicy {
  heloName: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  dataTimeoutMs: number;
  tlsContext?: TlsClientContext;
  hostsRequireTls: HostList;
  tlsVerifyHosts: HostList;
  tlsTryVerifyHosts: HostList;
  tlsVerifyCertHostnames: HostList;
  hostsRequestOcsp: HostList;
  hostsRequireOcsp: HostList;
  hostsTryPrdr: HostList;
  /** Credentials for AUTH (route.auth) */
  auth?: { user: string; password: string };
}

/** An open, greeted session ready for MAIL. */
export interface OpenSession {
  client: SmtpClient;
  target: TargetHost;
  tls?: OutboundTlsFacts;
  sendingIp?: string;
  sendingPort?: number;
  /** Whether PRDR may be used with this host */
  tryPrdr: boolean;
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
): TransportPolicy {
  const pick = (key: keyof RouteSpec & keyof typeof delivery) =>
    new HostList((route[key] ?? delivery[key] ?? []) as ConstructorParameters<typeof HostList>[0]);
  return {
    heloName: delivery.heloName ?? hostname,
    connectTimeoutMs: delivery.connectTimeout,
    commandTimeoutMs: delivery.commandTimeout,
    dataTimeoutMs: delivery.dataTimeout,
    tlsContext,
    hostsRequireTls: pick("hostsRequireTls"),
    tlsVerifyHosts: pick("tlsVerifyHosts"),
    tlsTryVerifyHosts: pick("tlsTryVerifyHosts"),
    tlsVerifyCertHostnames: pick("tlsVerifyCertHostnames"),
    hostsRequestOcsp: pick("hostsRequestOcsp"),
    hostsRequireOcsp: pick("hostsRequireOcsp"),
    hostsTryPrdr: pick("hostsTryPrdr"),
    auth: route.auth,
  };
}

function errnoOf(err: unknown): string {
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

/** Opens a session to `target`; throws HostError for anything that should move on to the next host. */
export async function openSession(
  target: TargetHost,
  policy: TransportPolicy,
  events: EventBus,
  id?: string,
  opts: { noTls?: boolean } = {},
): Promise<OpenSession> {
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
  try {
    const banner = await client.greeting();
    const refuse = await events.dispatch("smtp:connect", { ...facts, banner: banner.lines.join(" "), id });
    if (refuse) throw new HostError(`connection closed by smtp:connect: ${refuse}`, "VETO");
    const caps = await client.ehlo(policy.heloName);
    const requireTls = await policy.hostsRequireTls.match(subject);
    let tls: OutboundTlsFacts | undefined;
    if (caps.startTls && (requireTls || !opts.noTls)) {
      const requireVerify = await policy.tlsVerifyHosts.match(subject);
      const tryVerify = requireVerify || (await policy.tlsTryVerifyHosts.match(subject));
      const checkNames = await policy.tlsVerifyCertHostnames.match(subject);
      const requireOcsp = await policy.hostsRequireOcsp.match(subject);
      const requestOcsp = requireOcsp || (await policy.hostsRequestOcsp.match(subject));
      const named = target.name !== target.ip;
      let tlsStream: Awaited<ReturnType<typeof tlsConnect>> | undefined;
      try {
        await client.startTls(async (s) => {
          tlsStream = await tlsConnect(s, {
            context: policy.tlsContext,
            serverName: named ? target.name : undefined,
            verify: "record",
            names: checkNames && named ? [target.name] : [],
            requestOcsp,
            requireOcsp,
            timeout: policy.connectTimeoutMs,
          });
          return tlsStream;
        });
      } catch (err) {
        // Like Exim's tls_tempfail_tryclear: a failed handshake may be retried in clear unless TLS is required.
        throw new HostError(`TLS session failed: ${errorMessage(err)}`, "TLS", {
          cause: err,
          tryClear: !requireTls && !requireVerify && !requireOcsp,
        });
      }
      const t = tlsStream!;
      const v = t.verification;
      const chain = t.peerCertificates;
      let verified = v?.verified === true && v.nameMatched !== false;
      let why = v?.verifyError ??
        (v?.nameMatched === false ? `certificate does not match ${target.name}` : undefined);
      for (const [depth, certificate] of chain.entries()) {
        const veto = await events.dispatch("tls:cert", { ...facts, depth, certificate, id });
        if (veto) {
          verified = false;
          why = `refused by tls:cert at depth ${depth}: ${veto}`;
          break;
        }
      }
      if (requireOcsp && v?.ocsp && !v.ocsp.ok) {
        throw new HostError(`OCSP check failed: ${v.ocsp.reason ?? v.ocsp.status}`, "TLS");
      }
      if (requireVerify && !verified) throw new HostError(`certificate verification failed: ${why}`, "TLS");
      tls = {
        ...t.info,
        peerCertificate: chain[0],
        peerChain: chain,
        cv: verified && tryVerify ? "yes" : "no",
      };
      await client.ehlo(policy.heloName);
    } else if (requireTls) {
      throw new HostError("TLS required but not offered by the server", "TLS");
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
