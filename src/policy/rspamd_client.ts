/**
 * A client for rspamd's HTTP scan protocol (`POST /checkv2`, rspamd 3.x): the envelope and connection facts
 * go in request headers (IP, Helo, Hostname, From, one Rcpt per recipient, Queue-Id, User, TLS-Cipher,
 * TLS-Version, Settings-ID), the message is the body; the JSON reply gives the action, score, symbols and
 * the header edits rspamd asks for (`milter.add_headers`/`remove_headers`, a rewritten subject).
 * TRUSTS: the rspamd server named in config.
 */

import { errorMessage } from "../core/error_message.ts";
import { oneLine } from "../core/one_line.ts";

/** rspamd's actions, from worst to best. */
export type RspamdAction =
  | "reject"
  | "soft reject"
  | "rewrite subject"
  | "add header"
  | "greylist"
  | "no action";

/** What rspamd is told about one message (for one group of recipients). */
export interface RspamdRequest {
  /** The client's IP address */
  ip?: string;
  helo?: string;
  /** The client's verified host name */
  hostname?: string;
  /** The envelope sender ("" for the null sender) */
  from?: string;
  rcpt: readonly string[];
  queueId?: string;
  /** The SMTP AUTH user */
  user?: string;
  tls?: { cipher?: string; version?: string };
  /** Which rspamd settings apply (a `settings` entry with this `id`) */
  settingsId?: string;
  /** The message as received (CRLF line endings) */
  message: Uint8Array;
}

/** One symbol rspamd found. */
export interface RspamdSymbol {
  score: number;
  options?: string[];
  description?: string;
}

/** rspamd's answer. */
export interface RspamdResult {
  action: RspamdAction;
  score: number;
  requiredScore: number;
  symbols: Record<string, RspamdSymbol>;
  /** Header fields to add, in order */
  addHeaders: [string, string][];
  /** Header field names to remove first */
  removeHeaders: string[];
  /** The new Subject: for `rewrite subject` */
  subject?: string;
  /** Text rspamd gives for the SMTP reply (`messages.smtp_message`) */
  smtpMessage?: string;
}

/** rspamd could not be asked (down, late, or an answer that is not rspamd's). */
export class RspamdError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RspamdError";
  }
}

const ACTIONS = new Set<string>([
  "reject",
  "soft reject",
  "rewrite subject",
  "add header",
  "greylist",
  "no action",
]);

/** Talks to one rspamd worker. */
export class RspamdClient {
  readonly #url: string;
  readonly #timeoutMs: number;

  /** `url` is the normal worker's base URL (`http://127.0.0.1:11333`). */
  constructor(opts: { url: string; timeoutMs: number }) {
    this.#url = opts.url.replace(/\/+$/, "") + "/checkv2";
    this.#timeoutMs = opts.timeoutMs;
  }

  /** Scans a message; throws RspamdError when rspamd does not answer in time or answers nonsense. */
  async check(req: RspamdRequest, opts: { signal?: AbortSignal } = {}): Promise<RspamdResult> {
    const headers = new Headers({ "Content-Type": "message/rfc822" });
    const set = (name: string, value: string | undefined) => {
      if (value !== undefined && value !== "") headers.append(name, oneLine(value));
    };
    set("IP", req.ip);
    set("Helo", req.helo);
    set("Hostname", req.hostname);
    // rspamd reads an empty From as "no sender"; the null sender is sent as "<>".
    if (req.from !== undefined) headers.set("From", req.from === "" ? "<>" : oneLine(req.from));
    for (const r of req.rcpt) headers.append("Rcpt", oneLine(r));
    set("Queue-Id", req.queueId);
    set("User", req.user);
    set("TLS-Cipher", req.tls?.cipher);
    set("TLS-Version", req.tls?.version);
    set("Settings-ID", req.settingsId);
    const signals = [AbortSignal.timeout(this.#timeoutMs)];
    if (opts.signal) signals.push(opts.signal);
    let res: Response;
    try {
      res = await fetch(this.#url, {
        method: "POST",
        headers,
        body: req.message as Uint8Array<ArrayBuffer>,
        signal: AbortSignal.any(signals),
      });
    } catch (err) {
      throw new RspamdError(`rspamd ${this.#url}: ${errorMessage(err)}`, { cause: err });
    }
    let body: unknown;
    try {
      if (!res.ok) throw new Error(`HTTP ${res.status} ${await res.text()}`);
      body = await res.json();
    } catch (err) {
      throw new RspamdError(`rspamd ${this.#url}: ${errorMessage(err)}`, { cause: err });
    }
    return parseReply(body, this.#url);
  }
}

/** Reads /checkv2's JSON. */
export function parseReply(body: unknown, where = "rspamd"): RspamdResult {
  if (typeof body !== "object" || body === null) {
    throw new RspamdError(`${where}: reply is not a JSON object`);
  }
  const o = body as Record<string, unknown>;
  if (typeof o.action !== "string" || !ACTIONS.has(o.action)) {
    throw new RspamdError(`${where}: reply without a known action (${JSON.stringify(o.action)})`);
  }
  const symbols: Record<string, RspamdSymbol> = {};
  for (const [name, s] of Object.entries((o.symbols ?? {}) as Record<string, Record<string, unknown>>)) {
    symbols[name] = {
      score: Number(s?.score ?? 0),
      options: Array.isArray(s?.options) ? s.options.map(String) : undefined,
      description: typeof s?.description === "string" ? s.description : undefined,
    };
  }
  const milter = (o.milter ?? {}) as Record<string, unknown>;
  const addHeaders: [string, string][] = [];
  for (const [name, v] of Object.entries((milter.add_headers ?? {}) as Record<string, unknown>)) {
    // A value is a string, {value, order}, or a list of those.
    for (const one of Array.isArray(v) ? v : [v]) {
      const value = typeof one === "string" ? one : (one as { value?: unknown })?.value;
      if (typeof value === "string") addHeaders.push([name, oneLine(value)]);
    }
  }
  const messages = (o.messages ?? {}) as Record<string, unknown>;
  return {
    action: o.action as RspamdAction,
    score: Number(o.score ?? 0),
    requiredScore: Number(o.required_score ?? 0),
    symbols,
    addHeaders,
    removeHeaders: Object.keys((milter.remove_headers ?? {}) as Record<string, unknown>),
    subject: typeof o.subject === "string" ? oneLine(o.subject) : undefined,
    smtpMessage: typeof messages.smtp_message === "string" ? oneLine(messages.smtp_message) : undefined,
  };
}
