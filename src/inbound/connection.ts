/**
 * One inbound connection's SessionHandler: runs the policy chain of each stage, writes accepted messages
 * to the spool (the 250 goes out only after store() resolved), logs in Exim's words and fires events.
 */

import type { AuthInfo, ClientInfo, Envelope, ProxyInfo, Recipient, TlsInfo } from "../core/envelope.ts";
import { parseHeaders } from "../core/headers.ts";
import type { Logger } from "../core/log.ts";
import { type Reply, reply, SmtpError } from "../core/reply.ts";
import type { ByteStream } from "../core/stream.ts";
import type { Middleware } from "../core/compose.ts";
import type { ResolvedConfig } from "../config/schema.ts";
import { SpoolWriteError } from "../spool/spool.ts";
import type { Spool } from "../spool/spool.ts";
import type {
  ContentInfo,
  MessageOutcome,
  RcptEntry,
  SessionHandler,
  Transaction,
} from "../smtp/session_types.ts";
import {
  type BaseContext,
  type DataContext,
  type PolicyRecipient,
  type PrdrContext,
  type RefusedRecipient,
  type Stage,
  type StageContexts,
  verdicts,
} from "../policy/context.ts";
import { runStage } from "../policy/run_stage.ts";
import type { EventBus } from "../events/bus.ts";
import type { Resolver } from "../dns/resolver.ts";
import { receivedHeader } from "./received_header.ts";
import { errorMessage } from "../core/error_message.ts";
import type { Authenticator } from "./authenticator.ts";
import type { SaslCredentials, SaslMechanism } from "../smtp/sasl.ts";

/** Performs a server-side TLS handshake over a connected stream. */
export type TlsAcceptor = (
  stream: ByteStream,
  sni?: undefined,
) => Promise<{ stream: ByteStream; info: TlsInfo }>;

/** What every connection shares. */
export interface InboundDeps {
  config: ResolvedConfig;
  hostname: string;
  spool: Spool;
  log: Logger;
  events: EventBus;
  /** The built-in rcpt steps that run before the configured chain (relay control) */
  builtinRcpt: Middleware<StageContexts["rcpt"]>[];
  /** The built-in mail steps that run before the configured chain (sender login binding) */
  builtinMail?: Middleware<StageContexts["mail"]>[];
  /** Checks SMTP AUTH credentials, when `auth` is configured */
  authenticator?: Authenticator;
  tls?: TlsAcceptor;
  /** For the client's host name (smtp.hostLookup) */
  resolver?: Resolver;
}

/** Per-connection facts known before the session starts. */
export interface ConnectionFacts {
  client: ClientInfo;
  server: { ip: string; port: number };
  proxy?: ProxyInfo;
  /** The client's host is in proxyRequiredHosts and no valid PROXY header came (Exim's failed $proxy_session) */
  proxyFailed?: boolean;
  tls?: TlsInfo;
}

const encoder = new TextEncoder();

function toPolicyRecipient(r: RcptEntry): PolicyRecipient {
  return {
    address: r.address,
    local: r.mailbox?.local ?? r.address,
    domain: r.mailbox?.domain ?? "",
    notify: r.notify,
    orcpt: r.orcpt,
  };
}

function jsonSafe(map: Map<string, unknown>): Record<string, unknown> | undefined {
  if (map.size === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of map) {
    try {
      JSON.stringify(v);
      out[k] = v;
    } catch { /* not serialisable: kept in memory only */ }
  }
  return out;
}

/** The SessionHandler for one connection. */
export class InboundConnection implements SessionHandler {
  #deps: InboundDeps;
  #facts: ConnectionFacts;
  #connVars = new Map<string, unknown>();
  #msgVars = new Map<string, unknown>();
  #helo?: string;
  #esmtp = false;
  #auth?: AuthInfo;

  constructor(deps: InboundDeps, facts: ConnectionFacts) {
    this.#deps = deps;
    this.#facts = facts;
  }

  /** `H=(helo) [ip]:port` as Exim writes it. */
  get hostField(): string {
    const c = this.#facts.client;
    const name = c.name ? `${c.name} ` : "";
    const helo = this.#helo ? `(${this.#helo}) ` : "";
    return `H=${name}${helo}[${c.ip}]:${c.port}`;
  }

  get #prx(): string {
    const p = this.#facts.proxy;
    return p ? ` PRX=[${p.proxyIp}]:${p.proxyPort}` : "";
  }

  #logLine(text: string, fields: Record<string, string | number | undefined> = {}): void {
    this.#deps.log.write(text, { client: this.#facts.client.ip, port: this.#facts.client.port, ...fields });
  }

  #base(stage: Stage, signal: AbortSignal): BaseContext {
    const f = this.#facts;
    return {
      stage,
      signal,
      client: { ...f.client, helo: this.#helo },
      server: f.server,
      proxy: f.proxy,
      proxyFailed: f.proxyFailed === true,
      tls: f.tls,
      auth: this.#auth,
      helo: this.#helo,
      connVars: this.#connVars,
      msgVars: this.#msgVars,
      log: (text) => this.#logLine(`${this.hostField} ${stage}: ${text}`, { stage }),
      ...verdicts(),
    };
  }

  /**
   * Runs a stage's chain (built-ins first) on the context `build` makes from the stage's base; a rejection is
   * logged as "rejected <what>" (when `what` is given) and rethrown.
   */
  async #run<S extends Stage>(
    stage: S,
    build: (base: BaseContext) => StageContexts[S],
    what?: string,
    builtin: Middleware<StageContexts[S]>[] = [],
  ): Promise<void> {
    const configured = this.#deps.config.policy[stage] as unknown as Middleware<StageContexts[S]>[];
    const abort = new AbortController();
    try {
      await runStage(stage, [...builtin, ...configured], build(this.#base(stage, abort.signal)), {
        abort,
        timeoutMs: this.#deps.config.limits.policyTimeout,
        log: (text) => this.#logLine(`${this.hostField} ${text}`, { stage }),
      });
    } catch (err) {
      if (what !== undefined && err instanceof SmtpError) {
        this.#logLine(
          `${this.hostField}${this.#prx} rejected ${what}: ${err.code} ${err.enhanced} ${err.message}`,
          {
            event: "rejected",
            code: err.code,
          },
        );
      }
      throw err;
    }
  }

  async connect(): Promise<void> {
    await this.#run("connect", (base) => base, "connection");
  }

  async helo(name: string, esmtp: boolean): Promise<void> {
    await this.#run("helo", (base) => ({ ...base, helo: name, esmtp }), `${esmtp ? "EHLO" : "HELO"} ${name}`);
    this.#helo = name;
    this.#esmtp = esmtp;
  }

  #mailContext(base: BaseContext, tx: Transaction) {
    return {
      ...base,
      sender: tx.sender,
      size: tx.params.size,
      smtputf8: tx.params.smtputf8,
      prdr: tx.params.prdr,
    };
  }

  async mail(tx: Transaction): Promise<void> {
    this.#msgVars = new Map();
    await this.#run(
      "mail",
      (base) => this.#mailContext(base, tx),
      `MAIL FROM:<${tx.sender}>`,
      this.#deps.builtinMail,
    );
  }

  async rcpt(tx: Transaction, rcpt: RcptEntry): Promise<void> {
    await this.#run(
      "rcpt",
      (base) => ({
        ...this.#mailContext(base, tx),
        recipient: toPolicyRecipient(rcpt),
        recipients: tx.recipients.map(toPolicyRecipient),
      }),
      `RCPT <${rcpt.address}> F=<${tx.sender}>`,
      this.#deps.builtinRcpt,
    );
  }

  async authenticate(mechanism: SaslMechanism, creds: SaslCredentials): Promise<boolean> {
    const authenticator = this.#deps.authenticator;
    if (!authenticator) return false;
    const name = mechanism.toLowerCase();
    const fail = (text: string) =>
      this.#logLine(
        `${name} authenticator failed for ${this.hostField}${this.#prx}: ${text} (set_id=${creds.authcid})`,
        { event: "auth_failed" },
      );
    try {
      const outcome = await authenticator.check(this.#facts.client, mechanism, creds);
      if (!outcome.ok) {
        fail(`535 Incorrect authentication data: ${outcome.reason}`);
        return false;
      }
    } catch (err) {
      const e = err instanceof SmtpError ? err : undefined;
      fail(e ? `${e.code} ${e.message}${e.cause ? `: ${errorMessage(e.cause)}` : ""}` : errorMessage(err));
      throw err;
    }
    this.#auth = { mechanism, user: creds.authcid, authzid: creds.authzid || undefined };
    return true;
  }

  reset(): void {
    this.#msgVars = new Map();
  }

  async startTls(stream: ByteStream): Promise<{ stream: ByteStream; info: TlsInfo }> {
    if (!this.#deps.tls) throw new Error("TLS is not configured");
    const result = await this.#deps.tls(stream);
    this.#facts.tls = result.info;
    this.#helo = undefined;
    return result;
  }

  protocolError(r: Reply, detail: string): void {
    this.#logLine(
      `SMTP protocol error: ${detail}${
        r.lines[0] ? ` (${[r.code, r.enhanced, r.lines[0]].filter(Boolean).join(" ")})` : ""
      } ${this.hostField}${this.#prx}`,
      {
        event: "protocol_error",
      },
    );
  }

  refused(r: Reply, what: string): void {
    this.#logLine(
      `${this.hostField}${this.#prx} rejected ${what}: ${
        [r.code, r.enhanced, r.lines.join(" ")].filter(Boolean).join(" ")
      }`,
      { event: "rejected", code: r.code },
    );
  }

  closed(reason: string): void {
    if (reason !== "QUIT") {
      this.#logLine(`SMTP connection from ${this.hostField}${this.#prx} closed: ${reason}`, {
        event: "closed",
      });
    }
  }

  #protocol(tx: Transaction): string {
    // RFC 3848 / RFC 6531: ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPSA.
    const base = tx.params.smtputf8 ? "utf8smtp" : this.#esmtp ? "esmtp" : "smtp";
    return base + (this.#facts.tls ? "s" : "") + (this.#auth ? "a" : "");
  }

  async message(tx: Transaction, content: Uint8Array, info: ContentInfo): Promise<MessageOutcome> {
    const added: string[] = [];
    let discarded = false;
    const all = tx.recipients.map(toPolicyRecipient);
    const refused: RefusedRecipient[] = [];
    // PRDR (as Exim's acl_smtp_data_prdr): per recipient, before the data stage, only for more than one.
    const prdrChecked = tx.params.prdr && this.#deps.config.prdr.enable && tx.recipients.length > 1;
    const dataFields = {
      headers: parseHeaders(content),
      messageSize: info.size,
      content,
      prdrChecked,
      refused,
      addHeader: (name: string, value: string) => {
        if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name) || /[\r\n]/.test(value)) {
          throw new TypeError(`Invalid header field ${JSON.stringify(name)}`);
        }
        added.push(`${name}: ${value}\r\n`);
      },
      discard: () => {
        discarded = true;
      },
    };

    let kept = tx.recipients;
    let prdrReplies: Reply[] | undefined;
    if (prdrChecked) {
      prdrReplies = [];
      kept = [];
      for (const r of tx.recipients) {
        const recipient = toPolicyRecipient(r);
        try {
          await this.#run("prdr", (base): PrdrContext => ({
            ...this.#mailContext(base, tx),
            ...dataFields,
            recipients: all,
            refused: [...refused],
            recipient,
          }));
          kept.push(r);
          prdrReplies.push(reply(250, "2.1.5", `<${r.address}> OK`));
        } catch (err) {
          const e = err instanceof SmtpError ? err : new SmtpError(451, "4.3.0", "Temporary local problem");
          this.#logLine(
            `${this.hostField} PRDR rejected <${r.address}>: ${e.code} ${e.enhanced} ${e.message}`,
            {
              event: "rejected",
            },
          );
          refused.push({ recipient, code: e.code, enhanced: e.enhanced, text: e.message });
          prdrReplies.push(reply(e.code, e.enhanced, `<${r.address}> ${e.message}`));
        }
      }
      if (kept.length === 0) {
        // Temporary only if every refusal was temporary: the client may then try them all again.
        const allTemporary = prdrReplies.every((r) => r.code < 500);
        return {
          prdr: prdrReplies,
          final: allTemporary
            ? reply(451, "4.7.1", "No recipients accepted the message, try again later")
            : reply(550, "5.7.1", "No recipients accepted the message"),
        };
      }
    }

    const dataContext = (base: BaseContext): DataContext => ({
      ...this.#mailContext(base, tx),
      ...dataFields,
      recipients: kept.map(toPolicyRecipient),
    });
    try {
      await this.#run("data", dataContext, `after DATA F=<${tx.sender}>`);
    } catch (err) {
      // After PRDR the per-recipient replies go out first; the data stage's refusal is then the final reply.
      if (!prdrReplies || !(err instanceof SmtpError) || err.close) throw err;
      return { prdr: prdrReplies, final: err.toReply() };
    }

    const id = this.#deps.spool.newId();
    const final = (r: Reply): MessageOutcome => prdrReplies ? { prdr: prdrReplies, final: r } : { reply: r };
    if (discarded) {
      this.#logLine(`${this.hostField} F=<${tx.sender}> message discarded by policy`, { event: "discarded" });
      return final(reply(250, "2.0.0", `OK id=${id}`));
    }
    const now = new Date();
    const protocol = this.#protocol(tx);
    const client = { ...this.#facts.client, helo: this.#helo };
    const trace = receivedHeader({
      client,
      hostname: this.#deps.hostname,
      protocol,
      id,
      tls: this.#facts.tls,
      sender: tx.sender,
      recipients: kept.map((r) => r.address),
      date: now,
    });
    const prefix = encoder.encode(trace + added.join(""));
    const stored = new Uint8Array(prefix.length + content.length);
    stored.set(prefix);
    stored.set(content, prefix.length);
    const envelope: Envelope = {
      id,
      sender: tx.sender,
      recipients: kept.map((r): Recipient => ({
        address: r.address,
        notify: r.notify,
        orcpt: r.orcpt,
        status: "pending",
      })),
      ret: tx.params.ret,
      envid: tx.params.envid,
      body: tx.params.body,
      smtputf8: tx.params.smtputf8 || undefined,
      size: stored.length,
      receivedAt: now.getTime(),
      protocol,
      client,
      proxy: this.#facts.proxy,
      tls: this.#facts.tls,
      auth: this.#auth,
      receivedBy: this.#deps.hostname,
      policy: jsonSafe(this.#msgVars),
    };
    try {
      // The buffer moves to the spool's thread instead of being copied (it is not used after this).
      await this.#deps.spool.store(envelope, stored, { transfer: true });
    } catch (err) {
      const detail = errorMessage(err);
      this.#logLine(`${this.hostField} F=<${tx.sender}> spool write failed: ${detail}`, {
        event: "spool_error",
      });
      if (err instanceof SpoolWriteError) return final(reply(452, "4.3.1", "Insufficient system storage"));
      return final(reply(451, "4.3.0", "Temporary local problem, please try again later"));
    }
    const msgId = dataFields.headers.find((h) => h.name.toLowerCase() === "message-id")?.value;
    const tls = this.#facts.tls;
    this.#deps.log.write(
      `<= ${tx.sender || "<>"} ${this.hostField} P=${protocol}` +
        (this.#auth ? ` A=${this.#auth.mechanism.toLowerCase()}:${this.#auth.user}` : "") +
        (tls ? ` X=${tls.version}:${tls.cipher}:${tls.bits}${tls.sni ? ` SNI=${tls.sni}` : ""}` : "") +
        ` S=${envelope.size}${msgId ? ` id=${msgId.replace(/^<|>$/g, "")}` : ""}${this.#prx}` +
        ` for ${kept.map((r) => r.address).join(" ")}`,
      {
        id,
        event: "<=",
        sender: tx.sender,
        client: client.ip,
        port: client.port,
        protocol,
        auth: this.#auth?.user,
        size: envelope.size,
        recipients: kept.map((r) => r.address),
        proxy: this.#facts.proxy ? `${this.#facts.proxy.proxyIp}:${this.#facts.proxy.proxyPort}` : undefined,
      },
    );
    this.#deps.events.emit("msg:received", { id, envelope });
    return final(reply(250, "2.0.0", `OK id=${id}`));
  }
}
