/**
 * The inbound server: listeners, connection limits, the PROXY protocol layer (trusted hosts only),
 * implicit TLS, and one SMTP session per connection. Graceful stop: stop accepting, let open
 * transactions finish up to a deadline, answer 421 to the rest.
 */

import { DataMemory } from "../smtp/data_scanner.ts";
import { HostList, HostListError } from "../core/host_list.ts";
import { formatReply, reply } from "../core/reply.ts";
import type { ByteStream } from "../core/stream.ts";
import { ServerSession } from "../smtp/server_session.ts";
import type { SessionExtensions, SessionHandler } from "../smtp/session_types.ts";
import { relayControl } from "../policy/relay_control.ts";
import {
  srsOriginal,
  srsPermitted,
  srsReverseStep,
  srsRewriteStep,
  type SrsSettings,
} from "../policy/checks/srs.ts";
import { senderLogin, type SenderLogins } from "../policy/sender_login.ts";
import { Authenticator, type AuthenticatorOptions } from "./authenticator.ts";
import type { ResolvedConfig } from "../config/schema.ts";
import {
  type ConnectionFacts,
  InboundConnection,
  type InboundDeps,
  vetClientCertificates,
} from "./connection.ts";
import { readProxyHeader } from "./proxy_reader.ts";
import { lookupClientName } from "./host_lookup.ts";
import { errorMessage } from "../core/error_message.ts";
import { acceptLoop } from "./accept_loop.ts";
import { noObserver } from "../core/observer.ts";

const encoder = new TextEncoder();

/** What the server needs besides its config. */
export type InboundServerDeps =
  & Omit<InboundDeps, "builtinRcpt" | "builtinMail" | "builtinData" | "authenticator" | "srsOriginal">
  & {
    /** SRS settings with secrets loaded (`srs`), for reversing SRS recipients */
    srs?: SrsSettings;
  };

type ListenerSpec = ResolvedConfig["listen"][number];

/** What the PROXY layer found out about a connection. */
interface ProxyLayer {
  stream: ByteStream;
  facts: ConnectionFacts;
  initialInput?: Uint8Array;
  /** A LOCAL command or UNKNOWN family in the header: the connection has no client address */
  anonymous?: "LOCAL" | "UNKNOWN";
}

/** A bound listener's address. */
export interface BoundAddress {
  address: string;
  port: number;
  mode: "smtp" | "smtps";
}

/** Accepts SMTP connections on every configured listener. */
export class InboundServer {
  #deps: InboundDeps;
  #listeners: Deno.Listener[] = [];
  #sessions = new Set<ServerSession>();
  #perIp = new Map<string, number>();
  #open = 0;
  #stopping = false;
  #loops: Promise<void>[] = [];
  #lists;
  /** limits.dataMemory, shared by every session of every listener */
  #dataMemory: DataMemory;

  constructor(deps: InboundServerDeps) {
    const r = deps.config.relay;
    const c = deps.config;
    this.#dataMemory = new DataMemory(c.limits.dataMemory);
    this.#deps = {
      ...deps,
      builtinRcpt: [
        ...(deps.srs ? [srsReverseStep(deps.srs)] : []),
        relayControl({
          domains: r.domains,
          clients: r.clients,
          timeoutMs: c.limits.policyTimeout,
          permit: (c) => srsPermitted(c, c.recipient.address),
        }),
      ],
      builtinData: deps.srs ? [srsRewriteStep()] : [],
      srsOriginal: deps.srs ? (address) => srsOriginal(deps.srs!, address) : undefined,
      builtinMail: c.auth?.senderLogins ? [senderLogin(c.auth.senderLogins as SenderLogins)] : [],
      authenticator: c.auth
        ? new Authenticator({
          users: c.auth.users,
          check: c.auth.check as AuthenticatorOptions["check"],
          maxFailures: c.auth.maxFailures,
          failureWindowMs: c.auth.failureWindow,
          timeoutMs: c.limits.policyTimeout,
        })
        : undefined,
    };
    const list = (spec: ConstructorParameters<typeof HostList>[0], name: string) =>
      new HostList(spec, { name, timeoutMs: c.limits.policyTimeout });
    this.#lists = {
      proxy: list(c.proxyRequiredHosts, "proxyRequiredHosts"),
      hostLookup: list(c.smtp.hostLookup, "smtp.hostLookup"),
      pipelining: list(c.smtp.pipeliningAdvertiseHosts, "smtp.pipeliningAdvertiseHosts"),
      chunking: list(c.smtp.chunkingAdvertiseHosts, "smtp.chunkingAdvertiseHosts"),
      smtputf8: list(c.smtp.smtputf8AdvertiseHosts, "smtp.smtputf8AdvertiseHosts"),
      dsn: list(c.dsn.advertiseHosts, "dsn.advertiseHosts"),
      tls: list(c.tls.advertiseHosts, "tls.advertiseHosts"),
    };
  }

  /** Number of open connections. */
  get connections(): number {
    return this.#open;
  }

  /** Binds every listener and starts accepting; resolves to the bound addresses. */
  start(): BoundAddress[] {
    const bound: BoundAddress[] = [];
    for (const l of this.#deps.config.listen) {
      let listener: Deno.Listener;
      try {
        listener = Deno.listen({ hostname: l.address, port: l.port, transport: "tcp" });
      } catch (err) {
        for (const open of this.#listeners) open.close();
        this.#listeners = [];
        throw new Error(
          `cannot listen on [${l.address}]:${l.port}: ${errorMessage(err)}`,
          {
            cause: err,
          },
        );
      }
      this.#listeners.push(listener);
      const addr = listener.addr as Deno.NetAddr;
      bound.push({ address: addr.hostname, port: addr.port, mode: l.mode });
      const index = this.#listeners.length - 1;
      this.#loops.push(acceptLoop(listener, {
        stopping: () => this.#stopping,
        connection: (conn) => this.#serve(conn, l),
        reopen: () => {
          const again = Deno.listen({ hostname: addr.hostname, port: addr.port, transport: "tcp" });
          this.#listeners[index] = again;
          return again;
        },
        log: (text) => this.#deps.log.write(`[${addr.hostname}]:${addr.port}: ${text}`),
      }));
      this.#deps.log.write(`listening on [${addr.hostname}]:${addr.port} (${l.mode})`);
    }
    return bound;
  }

  /** Serves one accepted connection; whatever goes wrong, the connection is closed. */
  #serve(conn: Deno.Conn, spec: ListenerSpec): void {
    this.#handle(conn, spec).catch((err) => {
      this.#deps.log.write(`connection handler failed: ${errorMessage(err)}`);
      try {
        conn.close();
      } catch { /* closed */ }
    });
  }

  async #refuse(stream: ByteStream, code: number, enhanced: string, text: string): Promise<void> {
    try {
      await stream.write(encoder.encode(formatReply(reply(code, enhanced, text))));
    } catch { /* peer gone */ }
    try {
      stream.close();
    } catch { /* closed */ }
  }

  async #handle(conn: Deno.Conn, spec: ListenerSpec): Promise<void> {
    const { config, log } = this.#deps;
    const mode = spec.mode;
    const peer = conn.remoteAddr as Deno.NetAddr;
    if (this.#stopping) {
      return await this.#refuse(conn, 421, "4.3.2", `${this.#deps.hostname} Service shutting down`);
    }
    this.#open++;
    const obs = this.#deps.observer ?? noObserver;
    obs.connection("accepted");
    let counted: string | undefined;
    let stream: ByteStream = conn;
    try {
      if (this.#open > config.limits.connections) {
        obs.connection("refused");
        log.write(`SMTP connection from [${peer.hostname}]:${peer.port} refused: too many connections`);
        return await this.#refuse(
          conn,
          421,
          "4.7.0",
          `${this.#deps.hostname} Too many connections, try again later`,
        );
      }
      const layer = await this.#proxyLayer(conn);
      stream = layer.stream;
      if (layer.anonymous) return await this.#anonymous(layer);
      const client = layer.facts.client;
      const perIp = (this.#perIp.get(client.ip) ?? 0) + 1;
      this.#perIp.set(client.ip, perIp);
      counted = client.ip;
      if (perIp > config.limits.connectionsPerIp) {
        obs.connection("refused");
        log.write(
          `SMTP connection from [${client.ip}]:${client.port} refused: too many connections from that IP`,
        );
        return await this.#refuse(
          stream,
          421,
          "4.7.0",
          `${this.#deps.hostname} Too many connections from your host`,
        );
      }
      client.name = await this.#clientName(client.ip);
      const facts = layer.facts;
      let initialInput = layer.initialInput;
      if (mode === "smtps") {
        // A proxy may send its header and the client's ClientHello in one segment: those bytes open the
        // handshake (on a plain listener they are an early talker's, for the session to judge).
        const initial = initialInput;
        initialInput = undefined;
        try {
          const upgraded = await this.#deps.tls!(stream, { initial });
          stream = upgraded.stream;
          facts.tls = await vetClientCertificates(this.#deps, client, upgraded);
          obs.inboundTls("ok");
        } catch (err) {
          obs.inboundTls("failed");
          log.write(
            `TLS error on connection from [${client.ip}]:${client.port}: ${errorMessage(err)}`,
          );
          try {
            stream.close();
          } catch { /* closed */ }
          return;
        }
      }
      const extensions = await this.#extensions({ ip: client.ip, name: client.name });
      const handler = new InboundConnection(this.#deps, facts);
      const session = new ServerSession(stream, handler, {
        ...this.#sessionOptions(initialInput),
        extensions,
        clientIp: client.ip,
        refuseAll: layer.facts.proxyFailed
          ? reply(503, "5.7.0", "Command refused, required Proxy negotiation failed")
          : undefined,
        tls: facts.tls,
        auth: config.auth ? { mechanisms: config.auth.mechanisms, required: spec.submission } : undefined,
      });
      this.#sessions.add(session);
      try {
        await session.run();
      } finally {
        this.#sessions.delete(session);
      }
    } catch (err) {
      if (!(err instanceof HostListError)) throw err;
      // A host-list function hung or failed before the banner: a temporary refusal naming the list, as 421 (the
      // connection closes; RFC 5321 4.3.2 allows no other temporary code in place of the greeting).
      log.write(
        `SMTP connection from [${peer.hostname}]:${peer.port} refused: ${err.message}`,
        { event: "host_list_error", list: err.list, client: peer.hostname },
      );
      await this.#refuse(stream, 421, "4.3.0", "Temporary local problem, please try again later");
    } finally {
      this.#open--;
      obs.connection("closed");
      if (counted !== undefined) {
        const n = (this.#perIp.get(counted) ?? 1) - 1;
        if (n <= 0) this.#perIp.delete(counted);
        else this.#perIp.set(counted, n);
      }
    }
  }

  #sessionOptions(initialInput?: Uint8Array) {
    const { config } = this.#deps;
    const l = config.limits;
    return {
      hostname: this.#deps.hostname,
      banner: config.smtp.banner,
      limits: {
        commandLine: l.commandLine,
        textLine: l.textLine,
        messageSize: l.messageSize,
        recipients: l.recipients,
        badCommands: l.badCommands,
        commandTimeoutMs: l.commandTimeout,
        dataTimeoutMs: l.dataTimeout,
        greetingDelayMs: l.greetingDelay,
      },
      bareLineEndings: config.smtp.bareLineEndings,
      initialInput,
      dataMemory: this.#dataMemory,
    };
  }

  /**
   * A PROXY v2 LOCAL or v1 UNKNOWN connection (a load balancer's health check) carries no client address.
   * SECURITY: it gets no identity at all — not the proxy's, which may be trusted to relay: no policy stage
   * runs, no host list is asked, and every command but QUIT is refused. The banner and QUIT are what a
   * health check needs.
   */
  async #anonymous(layer: ProxyLayer): Promise<void> {
    const p = layer.facts.proxy!;
    const what = `PROXY ${layer.anonymous} connection via [${p.proxyIp}]:${p.proxyPort} (no client address)`;
    const handler: SessionHandler = {
      // Unreachable: refuseAll answers DATA and BDAT before a transaction could exist.
      message: () => Promise.reject(new Error("no client address")),
      closed: (reason: string) => {
        this.#deps.log.write(`${what} closed: ${reason}`, { event: "proxy_anonymous", proxy: p.proxyIp });
      },
    };
    const refuse = reply(503, "5.7.0", "Command refused, the PROXY header carried no client address");
    const session = new ServerSession(layer.stream, handler, {
      ...this.#sessionOptions(layer.initialInput),
      extensions: {
        pipelining: false,
        chunking: false,
        dsn: false,
        prdr: false,
        smtputf8: false,
        startTls: false,
      },
      clientIp: "",
      refuseAll: refuse,
    });
    this.#sessions.add(session);
    try {
      await session.run();
    } finally {
      this.#sessions.delete(session);
    }
  }

  /**
   * The PROXY protocol layer: from a host in proxyRequiredHosts a valid header replaces the client's address
   * (Ferry's own address stays `server`; the header's destination becomes `proxy.targetIp`/`targetPort`); a
   * missing, late or invalid one leaves the session refusing every command but QUIT (`proxyFailed`); a
   * LOCAL or UNKNOWN header leaves the connection without a client address (`anonymous`).
   */
  async #proxyLayer(conn: Deno.Conn): Promise<ProxyLayer> {
    const peer = conn.remoteAddr as Deno.NetAddr;
    const local = conn.localAddr as Deno.NetAddr;
    const facts: ConnectionFacts = {
      client: { ip: peer.hostname, port: peer.port },
      server: { ip: local.hostname, port: local.port },
    };
    if (this.#lists.proxy.empty || !(await this.#lists.proxy.match({ ip: peer.hostname }))) {
      return { stream: conn, facts };
    }
    const got = await readProxyHeader(conn, { timeoutMs: this.#deps.config.proxyTimeout });
    if (!got.header) {
      this.#deps.log.write(
        `PROXY negotiation failed from [${peer.hostname}]:${peer.port}: ${got.error}${
          got.reason ? ` (${got.reason})` : ""
        }`,
        { event: "proxy_failed", client: peer.hostname },
      );
      facts.proxyFailed = true;
      return { stream: got.stream, facts };
    }
    const { source, destination } = got.header;
    const initialInput = got.rest.length ? got.rest : undefined;
    facts.proxy = {
      proxyIp: peer.hostname,
      proxyPort: peer.port,
      targetIp: destination?.ip,
      targetPort: destination?.port,
      version: got.header.version,
    };
    if (got.header.command !== "PROXY" || !source) {
      // LOCAL (v2 health checks) and the UNKNOWN family (v1 UNKNOWN, v2 UNSPEC/UNIX): no client address.
      const anonymous = got.header.command === "LOCAL" ? "LOCAL" : "UNKNOWN";
      return { stream: got.stream, facts, initialInput, anonymous };
    }
    facts.client = { ip: source.ip, port: source.port };
    return { stream: got.stream, facts, initialInput };
  }

  /** The client's forward-confirmed name when smtp.hostLookup asks for it. */
  async #clientName(ip: string): Promise<string | undefined> {
    const resolver = this.#deps.resolver;
    if (!resolver || this.#lists.hostLookup.empty || !(await this.#lists.hostLookup.match({ ip }))) {
      return undefined;
    }
    const found = await lookupClientName(resolver, ip, {
      signal: AbortSignal.timeout(this.#deps.config.dns.timeout * 3),
    });
    if (!found.name) this.#deps.log.write(`no host name found for IP address ${ip}: ${found.reason}`);
    return found.name;
  }

  /** The extensions this client is offered (host lists match its address and, when known, its name). */
  async #extensions(subject: { ip: string; name?: string }): Promise<SessionExtensions> {
    const config = this.#deps.config;
    return {
      pipelining: await this.#lists.pipelining.match(subject),
      chunking: await this.#lists.chunking.match(subject),
      smtputf8: await this.#lists.smtputf8.match(subject),
      dsn: await this.#lists.dsn.match(subject),
      prdr: config.prdr.enable,
      startTls: this.#deps.tls !== undefined && (await this.#lists.tls.match(subject)),
    };
  }

  /** Stops accepting, lets open transactions finish up to `graceMs`, then answers 421 to the rest. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch { /* closed */ }
    }
    await Promise.allSettled(this.#loops);
    for (const s of this.#sessions) s.requestStop();
    const deadline = Date.now() + graceMs;
    while (this.#sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.allSettled([...this.#sessions].map((s) => s.forceStop()));
  }
}
