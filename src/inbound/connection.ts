/**
 * One inbound connection's SessionHandler: runs the policy chain of each stage, writes accepted messages
 * to the spool (the 250 goes out only after store() resolved), logs in Exim's words and fires events.
 */

import type { AuthInfo, ClientInfo, Envelope, ProxyInfo, Recipient, TlsInfo } from "../core/envelope.ts";
import { parseHeaders } from "../core/headers.ts";
import { HeaderEdits } from "../core/header_edit.ts";
import type { Logger } from "../core/log.ts";
import { type Reply, reply, SmtpError } from "../core/reply.ts";
import type { ByteStream } from "../core/stream.ts";
import type { Middleware } from "../core/compose.ts";
import type { ResolvedConfig } from "../config/schema.ts";
import { SpoolWriteError } from "../spool/spool.ts";
import type { SpaceGuard } from "../spool/free_space.ts";
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
import type { Check, CheckResult, CheckState } from "../policy/check.ts";
import { checkSteps, VerdictSink } from "../policy/run_checks.ts";
import { authResultsValue, claimsAuthservId } from "../policy/auth_results.ts";
import { Variables } from "../policy/variables.ts";
import { BoundResolver } from "../dns/bound_resolver.ts";
import { DnsError } from "../dns/dns_error.ts";
import { TypedLookups } from "../dns/_typed_lookups.ts";
import type { EventBus } from "../events/bus.ts";
import type { Resolver } from "../dns/resolver.ts";
import { receivedHeader, tlsPeer } from "./received_header.ts";
import { errorMessage } from "../core/error_message.ts";
import type { Authenticator } from "./authenticator.ts";
import { noObserver, type Observer } from "../core/observer.ts";
import type { SaslCredentials, SaslMechanism } from "../smtp/sasl.ts";
import { RepeatedRecipients, withoutRepeats } from "./repeated_recipient.ts";

/** Performs a server-side TLS handshake over a connected stream. */
export type TlsAcceptor = (
  stream: ByteStream,
  opts?: {
    /** Handshake bytes already read off the connection (behind a PROXY header that came in the same read) */
    initial?: Uint8Array;
  },
) => Promise<{ stream: ByteStream; info: TlsInfo; certificates?: Uint8Array[] }>;

/**
 * Fires `tls:cert` (direction "inbound") for each certificate the client presented, leaf first, as Exim does
 * "before both" directions' verification; a veto — or a handler that fails — marks the client certificate as
 * not verified (`c.tls.peerVerified` false). Returns the TLS facts to keep.
 */
export async function vetClientCertificates(
  deps: Pick<InboundDeps, "events" | "log">,
  client: ClientInfo,
  result: { info: TlsInfo; certificates?: Uint8Array[] },
): Promise<TlsInfo> {
  const chain = result.certificates ?? [];
  for (const [depth, certificate] of chain.entries()) {
    const veto = await deps.events.dispatch("tls:cert", {
      host: client.name ?? client.ip,
      address: client.ip,
      port: client.port,
      depth,
      certificate,
      direction: "inbound",
    });
    if (veto) {
      deps.log.write(
        `TLS client certificate of [${client.ip}]:${client.port} refused by tls:cert at depth ${depth}: ${veto}`,
        { client: client.ip, event: "tls_cert_refused" },
      );
      return { ...result.info, peerVerified: false };
    }
  }
  return result.info;
}

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
  /** Built-in data steps that run before the checks (SRS reverse rewriting) */
  builtinData?: Middleware<StageContexts["data"]>[];
  /** Checks SMTP AUTH credentials, when `auth` is configured */
  authenticator?: Authenticator;
  /** Internal hooks for metrics */
  observer?: Observer;
  tls?: TlsAcceptor;
  /** For the client's host name (smtp.hostLookup) and for policy (`c.resolver`) */
  resolver?: Resolver;
  /** Called when a message is stored: wakes the queue manager directly (not through the user event bus) */
  onStored?: (id: string) => void;
  /**
   * Asked before a message is stored: the queue manager's deferral when all its destinations are dead (the
   * envelope's recipients then carry it, and it is stored `deferred` with `history`; undefined for a held
   * message); `stored()` replaces `onStored` for that message
   */
  deferAtArrival?: (envelope: Envelope) => Promise<{ history: string[]; stored(): void } | undefined>;
  /** The spool's free-space guard (`spool.minFree`), checked at MAIL */
  spaceGuard?: SpaceGuard;
  /** The configured checks (`checks`), already opened */
  checks?: readonly Check[];
  /** The original address a valid SRS recipient of ours reverses to (`srs`); undefined for other addresses */
  srsOriginal?: (address: string) => string | undefined;
}

/** Answers every question with a DnsError: policy's resolver when Ferry runs without one. */
class NoResolver extends TypedLookups {
  query(name: string, type: string): Promise<never> {
    return Promise.reject(
      new DnsError("NETWORK", "no DNS resolver configured", { qname: name, qtype: type }),
    );
  }
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

function toPolicyRecipient(r: RcptEntry): PolicyRecipient {
  return {
    address: r.address,
    local: r.mailbox?.local ?? r.address,
    domain: r.mailbox?.domain ?? "",
    notify: r.notify,
    orcpt: r.orcpt,
  };
}

type StageMethod = "mail" | "rcpt" | "data" | "prdr";

/** The SessionHandler for one connection. */
export class InboundConnection implements SessionHandler {
  #deps: InboundDeps;
  #facts: ConnectionFacts;
  #vars = new Variables();
  #connSink = new VerdictSink();
  #msgSink = new VerdictSink();
  /** Per-message state of each check (by position in `checks`), made at MAIL FROM */
  #states: (CheckState | undefined)[] = [];
  #helo?: string;
  #esmtp = false;
  #auth?: AuthInfo;

  #obs: Observer;
  #repeated: RepeatedRecipients;
  #onVerdict = (check: string, stage: string, action: string) => this.#obs.checkVerdict(check, stage, action);

  constructor(deps: InboundDeps, facts: ConnectionFacts) {
    this.#deps = deps;
    this.#obs = deps.observer ?? noObserver;
    this.#facts = facts;
    this.#repeated = new RepeatedRecipients(deps.srsOriginal);
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

  get #checks(): readonly Check[] {
    return this.#deps.config.checks.length ? this.#deps.checks ?? [] : [];
  }

  get #authservId(): string {
    return this.#deps.config.authservId ?? this.#deps.hostname;
  }

  /** Steps running one connection-level method of every check that has it. */
  #connectionSteps<S extends "connect" | "helo">(stage: S): Middleware<StageContexts[S]>[] {
    const methods = this.#checks.filter((ch) => ch[stage]).map((ch) => ({
      name: ch.name,
      run: (c: StageContexts[S]) => (ch[stage] as (c: StageContexts[S]) => CheckResult).call(ch, c),
    }));
    return checkSteps(methods, () => ({
      sink: this.#connSink,
      canQuarantine: false,
      onVerdict: this.#onVerdict,
    }));
  }

  /** Steps running one per-message method of every check's state; `recipient` scopes quarantine. */
  #messageSteps<S extends StageMethod>(
    stage: S,
    recipient?: (c: StageContexts[S]) => string,
  ): Middleware<StageContexts[S]>[] {
    const methods = this.#checks.map((ch, i) => ({
      name: ch.name,
      run: (c: StageContexts[S]) => {
        const state = this.#states[i];
        const fn = state?.[stage] as ((c: StageContexts[S]) => CheckResult) | undefined;
        return fn?.call(state, c);
      },
    }));
    return checkSteps(methods, (c) => ({
      sink: this.#msgSink,
      // A quarantine goes to quarantine.route, or else to the hold queue state.
      canQuarantine: true,
      recipient: recipient?.(c),
      onVerdict: this.#onVerdict,
    }));
  }

  #base(stage: Stage, signal: AbortSignal): BaseContext {
    const f = this.#facts;
    return {
      ...this.#vars.access(stage === "connect" || stage === "helo" ? "connection" : "message"),
      stage,
      signal,
      resolver: new BoundResolver(this.#deps.resolver ?? new NoResolver(), signal),
      authservId: this.#authservId,
      client: { ...f.client, helo: this.#helo },
      server: f.server,
      proxy: f.proxy,
      proxyFailed: f.proxyFailed === true,
      tls: f.tls,
      auth: this.#auth,
      helo: this.#helo,
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
      this.#obs.rejected(stage, err instanceof SmtpError ? err.code : 451);
      if (what !== undefined && err instanceof SmtpError) {
        // A refusal at connect goes out as a 554 greeting, a temporary one as 421 (the session closes, RFC
        // 5321 4.3.2): log what is sent.
        const code = stage !== "connect" ? err.code : err.code < 500 ? 421 : 554;
        this.#logLine(
          `${this.hostField}${this.#prx} rejected ${what}: ${code} ${err.enhanced} ${err.message}`,
          {
            event: "rejected",
            code,
          },
        );
      }
      throw err;
    }
  }

  async connect(): Promise<void> {
    await this.#run("connect", (base) => base, "connection", this.#connectionSteps("connect"));
  }

  async helo(name: string, esmtp: boolean): Promise<void> {
    await this.#run(
      "helo",
      (base) => ({ ...base, helo: name, esmtp }),
      `${esmtp ? "EHLO" : "HELO"} ${name}`,
      this.#connectionSteps("helo"),
    );
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

  #resetMessage(): void {
    this.#repeated.reset();
    this.#vars.resetMessage();
    this.#msgSink = new VerdictSink();
    this.#states = [];
  }

  async mail(tx: Transaction): Promise<void> {
    this.#resetMessage();
    const checks = this.#checks;
    // The per-message states are made inside the stage, under its deadline.
    const begin: Middleware<StageContexts["mail"]> = async (c, next) => {
      this.#states = [];
      for (const ch of checks) this.#states.push(await ch.message?.(c));
      await next();
    };
    Object.defineProperty(begin, "name", { value: "checks: new message" });
    const guard = this.#deps.spaceGuard;
    // Postfix's queue_minfree: refuse before the client sends data, not after.
    const space: Middleware<StageContexts["mail"]> = async function spool_space(_c, next) {
      if (guard && !guard.hasRoom(tx.params.size)) {
        throw new SmtpError(452, "4.3.1", "Insufficient system storage");
      }
      await next();
    };
    await this.#run(
      "mail",
      (base) => this.#mailContext(base, tx),
      `MAIL FROM:<${tx.sender}>`,
      [
        space,
        ...(this.#deps.builtinMail ?? []),
        ...(checks.length ? [begin, ...this.#messageSteps("mail")] : []),
      ],
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
      [...this.#deps.builtinRcpt, ...this.#messageSteps("rcpt", (c) => c.recipient.address)],
    );
  }

  repeats(tx: Transaction, rcpt: RcptEntry): boolean {
    return this.#repeated.repeats(tx.recipients.map((r) => r.address), rcpt.address);
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
        this.#obs.auth("failure");
        return false;
      }
    } catch (err) {
      const e = err instanceof SmtpError ? err : undefined;
      this.#obs.auth(e?.code === 421 ? "blocked" : "tempfail");
      fail(e ? `${e.code} ${e.message}${e.cause ? `: ${errorMessage(e.cause)}` : ""}` : errorMessage(err));
      throw err;
    }
    this.#auth = { mechanism, user: creds.authcid, authzid: creds.authzid || undefined };
    this.#obs.auth("success");
    return true;
  }

  reset(): void {
    this.#resetMessage();
  }

  async startTls(stream: ByteStream): Promise<{ stream: ByteStream; info: TlsInfo }> {
    if (!this.#deps.tls) throw new Error("TLS is not configured");
    let result;
    try {
      result = await this.#deps.tls(stream);
      this.#obs.inboundTls("ok");
    } catch (err) {
      this.#obs.inboundTls("failed");
      throw err;
    }
    const info = await vetClientCertificates(this.#deps, this.#facts.client, result);
    this.#facts.tls = info;
    this.#helo = undefined;
    return { stream: result.stream, info };
  }

  protocolError(r: Reply, detail: string): void {
    if (r.code >= 400) this.#obs.rejected(/AUTH|authentication/i.test(detail) ? "auth" : "protocol", r.code);
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
    const edits = new HeaderEdits();
    // RFC 8601 5: an Authentication-Results field claiming our authserv-id did not come from us.
    const authservId = this.#authservId;
    edits.remove("Authentication-Results", (v) => claimsAuthservId(v, authservId));
    let discarded = false;
    let sender = tx.sender;
    const rewrites = new Map<string, readonly string[]>();
    const all = tx.recipients.map(toPolicyRecipient);
    const refused: RefusedRecipient[] = [];
    // PRDR (as Exim's acl_smtp_data_prdr): per recipient, before the data stage, only for more than one.
    const prdrChecked = tx.params.prdr && this.#deps.config.prdr.enable && tx.recipients.length > 1;
    // The queue id is known to the prdr and data stages (rspamd's Queue-Id), as Exim's $message_exim_id is.
    const id = this.#deps.spool.newId();
    const dataFields = {
      id,
      headers: parseHeaders(content),
      messageSize: info.size,
      content,
      prdrChecked,
      refused,
      addHeader: (name: string, value: string) => edits.add(name, value),
      removeHeader: (name: string, match?: (value: string, index: number) => boolean) =>
        edits.remove(name, match),
      replaceHeader: (name: string, value: string) => edits.replace(name, value),
      addAuthResult: (result: string) => {
        if (/[\r\n]/.test(result)) {
          throw new TypeError("Invalid line break in an Authentication-Results result");
        }
        this.#msgSink.authResults.push(result);
      },
      setSender: (address: string) => {
        if (/[\s<>]/.test(address)) throw new TypeError(`Invalid sender address ${JSON.stringify(address)}`);
        sender = address;
      },
      rewriteRecipient: (address: string, to: readonly string[]) => {
        for (const a of to) {
          if (!/^[^\s<>]+$/.test(a)) throw new TypeError(`Invalid recipient address ${JSON.stringify(a)}`);
        }
        rewrites.set(address, [...to]);
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
          await this.#run(
            "prdr",
            (base): PrdrContext => ({
              ...this.#mailContext(base, tx),
              ...dataFields,
              recipients: all,
              refused: [...refused],
              recipient,
            }),
            undefined,
            this.#messageSteps("prdr", (c) => c.recipient.address),
          );
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
      await this.#run("data", dataContext, `after DATA F=<${tx.sender}>`, [
        ...(this.#deps.builtinData ?? []),
        ...this.#messageSteps("data"),
      ]);
    } catch (err) {
      // After PRDR the per-recipient replies go out first; the data stage's refusal is then the final reply.
      if (!prdrReplies || !(err instanceof SmtpError) || err.close) throw err;
      return { prdr: prdrReplies, final: err.toReply() };
    }

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
    const authResults = [...this.#connSink.authResults, ...this.#msgSink.authResults];
    let prefix = trace;
    if (this.#checks.length || authResults.length) {
      prefix += `Authentication-Results: ${authResultsValue(authservId, authResults)}\r\n`;
      this.#vars.message.set("authResults", authResults);
    }
    for (const h of [...this.#connSink.headers, ...this.#msgSink.headers]) {
      prefix += `${h.name}: ${h.value}\r\n`;
    }
    const stored = edits.apply(content, prefix);
    const quarantined = this.#msgSink.quarantine;
    const envelope: Envelope = {
      id,
      sender,
      // Rewrites can land two recipients on one mailbox: it is stored (and delivered) once.
      recipients: withoutRepeats(kept.flatMap((r): Recipient[] => {
        const why = quarantined ?? this.#msgSink.quarantinedRecipients.get(r.address);
        const extra = why !== undefined ? { quarantine: why } : undefined;
        const to = rewrites.get(r.address);
        if (!to) return [{ address: r.address, notify: r.notify, orcpt: r.orcpt, status: "pending", extra }];
        // RFC 3461 4.2: a rewritten recipient keeps the address the client gave as ORCPT.
        const orcpt = r.orcpt ?? { type: "rfc822", address: r.address };
        return to.map((address) => ({ address, notify: r.notify, orcpt, status: "pending", extra }));
      })),
      ret: tx.params.ret,
      envid: tx.params.envid,
      body: tx.params.body,
      smtputf8: tx.params.smtputf8 || undefined,
      requireTls: tx.params.requireTls || undefined,
      size: stored.length,
      receivedAt: now.getTime(),
      protocol,
      client,
      proxy: this.#facts.proxy,
      tls: this.#facts.tls,
      auth: this.#auth,
      receivedBy: this.#deps.hostname,
      policy: this.#vars.messageJson(),
    };
    // Quarantine without a quarantine route: the quarantined recipients are stored as their own message in the
    // `hold` queue state (all of them: this message itself), until an operator releases it.
    let held: Envelope | undefined;
    if (!this.#deps.config.quarantine) {
      const marked = envelope.recipients.filter((r) => r.extra?.quarantine !== undefined);
      const reason = () => [...new Set(marked.map((r) => String(r.extra!.quarantine)))].join("; ");
      if (marked.length === envelope.recipients.length && marked.length > 0) envelope.hold = reason();
      else if (marked.length > 0) {
        held = { ...envelope, id: this.#deps.spool.newId(), recipients: marked, hold: reason() };
        envelope.recipients = envelope.recipients.filter((r) => r.extra?.quarantine === undefined);
      }
    }
    const storeStart = performance.now();
    let deferral: { history: string[]; stored(): void } | undefined;
    try {
      if (held) await this.#deps.spool.store(held, stored.slice());
      // Every destination dead: stored as deferred at once, one write instead of a claim and a deferral more
      // (never a held message: deferIfDead leaves those alone).
      deferral = await this.#deps.deferAtArrival?.(envelope).catch(() => undefined);
      // The buffer moves to the spool's thread instead of being copied (it is not used after this).
      await this.#deps.spool.store(envelope, stored, { transfer: true, history: deferral?.history });
      this.#obs.spoolStore((performance.now() - storeStart) / 1000);
    } catch (err) {
      this.#obs.rejected("spool", err instanceof SpoolWriteError ? 452 : 451);
      const detail = errorMessage(err);
      this.#logLine(`${this.hostField} F=<${tx.sender}> spool write failed: ${detail}`, {
        event: "spool_error",
      });
      if (err instanceof SpoolWriteError) {
        this.#deps.spaceGuard?.invalidate();
        return final(reply(452, "4.3.1", "Insufficient system storage"));
      }
      return final(reply(451, "4.3.0", "Temporary local problem, please try again later"));
    }
    const msgId = dataFields.headers.find((h) => h.name.toLowerCase() === "message-id")?.value;
    const tls = this.#facts.tls;
    const quarantine = envelope.recipients.filter((r) => r.extra?.quarantine !== undefined).map((r) =>
      r.address
    );
    this.#deps.log.write(
      `<= ${sender || "<>"} ${this.hostField} P=${protocol}` +
        (this.#auth ? ` A=${this.#auth.mechanism.toLowerCase()}:${this.#auth.user}` : "") +
        (tls
          ? ` X=${tls.version}:${tls.cipher}:${tls.bits}${tlsPeer(tls)}${tls.sni ? ` SNI=${tls.sni}` : ""}`
          : "") +
        ` S=${envelope.size}${msgId ? ` id=${msgId.replace(/^<|>$/g, "")}` : ""}${this.#prx}` +
        (quarantine.length
          ? ` Q=${quarantine.length === envelope.recipients.length ? "all" : quarantine.join(",")}`
          : "") +
        ` for ${envelope.recipients.map((r) => r.address).join(" ")}`,
      {
        id,
        event: "<=",
        sender,
        client: client.ip,
        port: client.port,
        protocol,
        auth: this.#auth?.user,
        peerDn: tls?.peerSubject,
        size: envelope.size,
        recipients: envelope.recipients.map((r) => r.address),
        proxy: this.#facts.proxy ? `${this.#facts.proxy.proxyIp}:${this.#facts.proxy.proxyPort}` : undefined,
      },
    );
    this.#obs.received({ tls: !!tls, auth: !!this.#auth, size: envelope.size });
    for (const e of held ? [envelope, held] : [envelope]) {
      if (e.hold !== undefined) {
        this.#deps.log.write(
          `${e.id === id ? "" : `<= ${sender || "<>"} R=${id} (quarantined part) `}held: ${e.hold} for ${
            e.recipients.map((r) => r.address).join(" ")
          }`,
          { id: e.id, event: "held" },
        );
      }
      if (e === envelope && deferral) deferral.stored();
      else if (e.hold === undefined) this.#deps.onStored?.(e.id);
      this.#deps.events.emit("msg:received", { id: e.id, envelope: e });
    }
    return final(reply(250, "2.0.0", `OK id=${id}`));
  }
}
