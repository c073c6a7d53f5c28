/**
 * The inbound server: listeners, connection limits, the PROXY protocol layer (trusted hosts only),
 * implicit TLS, and one SMTP session per connection. Graceful stop: stop accepting, let open
 * transactions finish up to a deadline, answer 421 to the rest.
 */

import { HostList } from "../core/host_list.ts";
import { formatReply, reply } from "../core/reply.ts";
import type { ByteStream } from "../core/stream.ts";
import { ServerSession } from "../smtp/server_session.ts";
import type { SessionExtensions } from "../smtp/session_types.ts";
import { relayControl } from "../policy/relay_control.ts";
import { senderLogin, type SenderLogins } from "../policy/sender_login.ts";
import { Authenticator, type AuthenticatorOptions } from "./authenticator.ts";
import type { ResolvedConfig } from "../config/schema.ts";
import { type ConnectionFacts, InboundConnection, type InboundDeps } from "./connection.ts";
import { readProxyHeader } from "./proxy_reader.ts";
import { lookupClientName } from "./host_lookup.ts";
import { errorMessage } from "../core/error_message.ts";

const encoder = new TextEncoder();

/** What the server needs besides its config. */
export type InboundServerDeps = Omit<InboundDeps, "builtinRcpt" | "builtinMail" | "authenticator">;

type ListenerSpec = ResolvedConfig["listen"][number];

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

  constructor(deps: InboundServerDeps) {
    const r = deps.config.relay;
    const c = deps.config;
    this.#deps = {
      ...deps,
      builtinRcpt: [relayControl({ domains: r.domains, clients: r.clients })],
      builtinMail: c.auth?.senderLogins ? [senderLogin(c.auth.senderLogins as SenderLogins)] : [],
      authenticator: c.auth
        ? new Authenticator({
          users: c.auth.users,
          check: c.auth.check as AuthenticatorOptions["check"],
          maxFailures: c.auth.maxFailures,
          failureWindowMs: c.auth.failureWindow,
        })
        : undefined,
    };
    this.#lists = {
      proxy: new HostList(c.proxyRequiredHosts),
      hostLookup: new HostList(c.smtp.hostLookup),
      pipelining: new HostList(c.smtp.pipeliningAdvertiseHosts),
      chunking: new HostList(c.smtp.chunkingAdvertiseHosts),
      smtputf8: new HostList(c.smtp.smtputf8AdvertiseHosts),
      dsn: new HostList(c.dsn.advertiseHosts),
      tls: new HostList(c.tls.advertiseHosts),
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
      this.#loops.push(this.#acceptLoop(listener, l));
      this.#deps.log.write(`listening on [${addr.hostname}]:${addr.port} (${l.mode})`);
    }
    return bound;
  }

  async #acceptLoop(listener: Deno.Listener, spec: ListenerSpec): Promise<void> {
    let pause = 0;
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        pause = 0;
        // Replies are small and answer a whole pipelined batch: send them at once, not after a delayed ACK.
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch (err) {
        if (this.#stopping || err instanceof Deno.errors.BadResource) return;
        // A peer that reset before accept (NotConnected) must not stop the listener. Anything else (out of
        // file descriptors) would fail again at once: wait, growing the pause, instead of spinning.
        if (err instanceof Deno.errors.NotConnected) continue;
        pause = Math.min(1000, pause ? pause * 2 : 100);
        this.#deps.log.write(
          `accept failed: ${errorMessage(err)}; retrying in ${pause} ms`,
        );
        await new Promise((r) => setTimeout(r, pause));
        continue;
      }
      this.#handle(conn, spec).catch((err) => {
        this.#deps.log.write(`connection handler failed: ${errorMessage(err)}`);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
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
    let counted: string | undefined;
    try {
      if (this.#open > config.limits.connections) {
        log.write(`SMTP connection from [${peer.hostname}]:${peer.port} refused: too many connections`);
        return await this.#refuse(
          conn,
          421,
          "4.7.0",
          `${this.#deps.hostname} Too many connections, try again later`,
        );
      }
      const layer = await this.#proxyLayer(conn);
      let stream = layer.stream;
      const client = layer.facts.client;
      const perIp = (this.#perIp.get(client.ip) ?? 0) + 1;
      this.#perIp.set(client.ip, perIp);
      counted = client.ip;
      if (perIp > config.limits.connectionsPerIp) {
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
      if (mode === "smtps") {
        try {
          const upgraded = await this.#deps.tls!(stream);
          stream = upgraded.stream;
          facts.tls = upgraded.info;
        } catch (err) {
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
      const l = config.limits;
      const session = new ServerSession(stream, handler, {
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
        extensions,
        bareLineEndings: config.smtp.bareLineEndings,
        clientIp: client.ip,
        initialInput: layer.initialInput,
        refuseAll: layer.proxyFailed
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
    } finally {
      this.#open--;
      if (counted !== undefined) {
        const n = (this.#perIp.get(counted) ?? 1) - 1;
        if (n <= 0) this.#perIp.delete(counted);
        else this.#perIp.set(counted, n);
      }
    }
  }

  /**
   * The PROXY protocol layer: from a host in proxyRequiredHosts a valid header replaces the client's address;
   * a missing, late or invalid one leaves the session refusing every command but QUIT.
   */
  async #proxyLayer(conn: Deno.Conn): Promise<{
    stream: ByteStream;
    facts: ConnectionFacts;
    initialInput?: Uint8Array;
    proxyFailed: boolean;
  }> {
    const peer = conn.remoteAddr as Deno.NetAddr;
    const local = conn.localAddr as Deno.NetAddr;
    const facts: ConnectionFacts = {
      client: { ip: peer.hostname, port: peer.port },
      server: { ip: local.hostname, port: local.port },
    };
    if (this.#lists.proxy.empty || !(await this.#lists.proxy.match({ ip: peer.hostname }))) {
      return { stream: conn, facts, proxyFailed: false };
    }
    const got = await readProxyHeader(conn, { timeoutMs: this.#deps.config.proxyTimeout });
    if (!got.header) {
      this.#deps.log.write(
        `PROXY negotiation failed from [${peer.hostname}]:${peer.port}: ${got.error}${
          got.reason ? ` (${got.reason})` : ""
        }`,
        { event: "proxy_failed", client: peer.hostname },
      );
      return { stream: got.stream, facts, proxyFailed: true };
    }
    const { source, destination } = got.header;
    // LOCAL (health checks) and UNKNOWN families keep the real peer address.
    if (got.header.command === "PROXY" && source && destination) {
      facts.proxy = {
        proxyIp: peer.hostname,
        proxyPort: peer.port,
        targetIp: destination.ip,
        targetPort: destination.port,
        version: got.header.version,
      };
      facts.client = { ip: source.ip, port: source.port };
      facts.server = { ip: destination.ip, port: destination.port };
    }
    return {
      stream: got.stream,
      facts,
      initialInput: got.rest.length ? got.rest : undefined,
      proxyFailed: false,
    };
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
