/**
 * The SMTP client session (RFC 5321): greeting, EHLO with HELO fallback, STARTTLS (RFC 3207), one or more
 * transactions using PIPELINING (RFC 2920), CHUNKING/BDAT (RFC 3030) or DATA with dot-stuffing, SIZE,
 * 8BITMIME, SMTPUTF8, DSN parameters (RFC 3461), PRDR (draft-hall-prdr), AUTH PLAIN/LOGIN (RFC 4954, 4616)
 * only over TLS; RSET and QUIT.
 * Pure protocol over a `ByteStream`: no DNS, no routing, no TLS policy (the caller's upgrade callback
 * decides what a good certificate is). Trusts the peer for nothing; every read and write has a deadline.
 */

import type { Reply } from "../core/reply.ts";
import type { ByteStream } from "../core/stream.ts";
import { type Capabilities, heloCapabilities, parseEhloReply } from "./client_capabilities.ts";
import { type OutboundEnvelope, planTransaction } from "./client_envelope.ts";
import { type ClientStage, SmtpClientError } from "./client_error.ts";
import { ClientConnection } from "./client_io.ts";
import { encodeDataPieces } from "./dot_stuff.ts";
import { encodeChallenge, encodePlain } from "./sasl.ts";

export type { Capabilities } from "./client_capabilities.ts";
export type { OutboundEnvelope, OutboundRecipient } from "./client_envelope.ts";
export { type ClientStage, SmtpClientError, SmtpTimeoutError } from "./client_error.ts";

/** Deadlines in milliseconds; defaults from RFC 5321 4.5.3.2. */
export interface ClientTimeouts {
  /** Waiting for the 220 greeting (5 min). */
  greeting: number;
  /** EHLO, HELO, STARTTLS, RSET, QUIT (5 min). */
  command: number;
  /** Reply to MAIL (5 min). */
  mail: number;
  /** Reply to each RCPT (5 min). */
  rcpt: number;
  /** Reply to DATA, the 354 (2 min). */
  dataInit: number;
  /** Writing each block of message data (3 min). */
  dataBlock: number;
  /** Reply after the end of data, and each PRDR reply (10 min). */
  dataFinal: number;
}

/** The RFC 5321 4.5.3.2 minimum timeouts. */
export const DEFAULT_TIMEOUTS: Readonly<ClientTimeouts> = Object.freeze({
  greeting: 300_000,
  command: 300_000,
  mail: 300_000,
  rcpt: 300_000,
  dataInit: 120_000,
  dataBlock: 180_000,
  dataFinal: 600_000,
});

/** Options of an `SmtpClient`. */
export interface SmtpClientOptions {
  /** Deadlines; unset ones take the RFC defaults. */
  timeouts?: Partial<ClientTimeouts>;
  /** Largest BDAT chunk in octets (default 1 MiB); a message that fits goes as one `BDAT n LAST`. */
  chunkSize?: number;
  /** Use PIPELINING when offered (default true). */
  pipelining?: boolean;
  /** Use CHUNKING when offered (default true; BINARYMIME messages always use it). */
  chunking?: boolean;
}

/** How one recipient fared in a transaction. */
export interface RecipientResult {
  address: string;
  /** The reply to RCPT; undefined when RCPT was never answered because MAIL failed first. */
  rcpt?: Reply;
  /** The PRDR reply for this recipient, when PRDR was used and RCPT was accepted. */
  prdr?: Reply;
  /** The reply that decided this recipient's fate. */
  reply: Reply;
  /** The stage that reply belongs to: "mail", "rcpt" or "data"/"bdat". */
  stage: ClientStage;
  /** True when the peer took responsibility for the message for this recipient. */
  delivered: boolean;
}

/** Everything the peer said in one transaction. */
export interface SendResult {
  mail: Reply;
  recipients: RecipientResult[];
  /** Recipients whose RCPT was accepted. */
  accepted: string[];
  /** Recipients the message was delivered to (a subset of `accepted`). */
  delivered: string[];
  /** The reply to DATA (354 or a refusal), when DATA was sent. */
  dataCommand?: Reply;
  /** The reply that ended the data phase (after any PRDR replies); undefined when no data was sent. */
  data?: Reply;
  /** PRDR was used (requested and offered, and the peer answered the data with 353). */
  prdr: boolean;
  /** DSN parameters went to the peer; when false the caller owes "relayed" notices (RFC 3461 4.2). */
  dsnPassed: boolean;
  /** How the data went: "data", "bdat" or "none" when no recipient was accepted. */
  method: "data" | "bdat" | "none";
}

type State = "new" | "greeted" | "ready";
const encoder = new TextEncoder();
const isOk = (r: Reply) => r.code >= 200 && r.code < 300;

/** An SMTP client session over one connection. */
export class SmtpClient {
  readonly #conn: ClientConnection;
  readonly #t: ClientTimeouts;
  readonly #opts: SmtpClientOptions;
  #state: State = "new";
  #caps: Capabilities | undefined;
  #tls = false;

  constructor(stream: ByteStream, options: SmtpClientOptions = {}) {
    this.#conn = new ClientConnection(stream);
    this.#t = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#opts = options;
  }

  /** The capabilities from the last EHLO/HELO; undefined before it and after STARTTLS. */
  get capabilities(): Capabilities | undefined {
    return this.#caps;
  }

  /** True after a successful STARTTLS. */
  get tls(): boolean {
    return this.#tls;
  }

  /** True once the connection was closed (QUIT, timeout, 421, broken peer). */
  get closed(): boolean {
    return this.#conn.closed;
  }

  /** Reads the greeting; anything but 220 throws (stage "greeting") and closes the connection. */
  async greeting(): Promise<Reply> {
    this.#expectState("new", "greeting");
    const r = await this.#conn.readReply("greeting", this.#t.greeting);
    if (r.code !== 220) {
      await this.quit().catch(() => {});
      throw new SmtpClientError("greeting", "reply", r);
    }
    this.#state = "greeted";
    return r;
  }

  /** Sends EHLO (HELO when EHLO gets 5xx) and returns the peer's capabilities. */
  async ehlo(name: string): Promise<Capabilities> {
    if (this.#state === "new") throw this.#local("ehlo", "Greeting not read yet");
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x20\x7f]/.test(name) || name === "") throw this.#local("ehlo", `Invalid EHLO name "${name}"`);
    this.#caps = undefined;
    let r = await this.#command(`EHLO ${name}`, "ehlo");
    if (isOk(r)) {
      this.#caps = parseEhloReply(r);
    } else if (r.code >= 500) {
      r = await this.#command(`HELO ${name}`, "ehlo");
      if (!isOk(r)) throw new SmtpClientError("ehlo", "reply", r);
      this.#caps = heloCapabilities();
    } else {
      throw new SmtpClientError("ehlo", "reply", r);
    }
    this.#state = "ready";
    return this.#caps;
  }

  /**
   * Sends STARTTLS, expects 220 and hands the stream to `upgrade`, which returns the TLS stream. All
   * state is then forgotten (RFC 3207 4.2): `ehlo()` must be called again before anything else.
   */
  async startTls(upgrade: (stream: ByteStream) => Promise<ByteStream>): Promise<void> {
    if (this.#state !== "ready") throw this.#local("starttls", "EHLO required before STARTTLS");
    if (this.#tls) throw this.#local("starttls", "TLS already active");
    if (!this.#caps?.startTls) throw this.#local("starttls", "Peer does not offer STARTTLS");
    const r = await this.#command("STARTTLS", "starttls");
    if (r.code !== 220) throw new SmtpClientError("starttls", "reply", r);
    // Bytes that arrived with the 220 were sent before TLS: a man in the middle may have injected them.
    if (this.#conn.hasUnread) {
      this.#conn.close();
      throw new SmtpClientError("starttls", "protocol", {
        code: 451,
        enhanced: "4.5.0",
        lines: ["Protocol error: data after the STARTTLS reply"],
      });
    }
    this.#caps = undefined;
    this.#state = "greeted";
    let upgraded: ByteStream;
    try {
      upgraded = await upgrade(this.#conn.stream);
    } catch (err) {
      this.#conn.close();
      throw err;
    }
    this.#conn.swap(upgraded);
    this.#tls = true;
  }

  /**
   * Authenticates with PLAIN (or LOGIN when only that is offered). Only after STARTTLS: a password never
   * goes in clear. A refusal throws (stage "auth").
   */
  async auth(user: string, password: string): Promise<Reply> {
    if (this.#state !== "ready" || !this.#caps) throw this.#local("auth", "EHLO required before AUTH");
    if (!this.#tls) throw this.#local("auth", "AUTH refused: the session is not encrypted");
    const offered = this.#caps.auth;
    let r: Reply;
    if (offered.includes("PLAIN")) {
      r = await this.#command(`AUTH PLAIN ${encodePlain(user, password)}`, "auth");
    } else if (offered.includes("LOGIN")) {
      r = await this.#command("AUTH LOGIN", "auth");
      if (r.code === 334) r = await this.#command(encodeChallenge(user), "auth");
      if (r.code === 334) r = await this.#command(encodeChallenge(password), "auth");
    } else {
      throw this.#local("auth", "Peer offers neither AUTH PLAIN nor AUTH LOGIN");
    }
    if (r.code !== 235) {
      // A 334 here means the peer wants more than LOGIN's two answers: cancel the exchange.
      if (r.code === 334) await this.#command("*", "auth").catch(() => {});
      throw new SmtpClientError("auth", "reply", r);
    }
    return r;
  }

  /**
   * Runs one mail transaction. Recipient and data refusals are returned in the result; local refusals
   * (size, missing 8BITMIME/SMTPUTF8), timeouts, garbled replies and lost connections throw.
   * `options.beforeData` is awaited before the message data goes out (after the 354, or before the LAST
   * chunk): the peer cannot complete the transaction until it resolves.
   */
  async send(
    envelope: OutboundEnvelope,
    data: Uint8Array,
    options: { beforeData?: () => Promise<void> } = {},
  ): Promise<SendResult> {
    if (this.#state !== "ready" || !this.#caps) throw this.#local("mail", "EHLO required before MAIL");
    const caps = this.#caps;
    const plan = planTransaction(envelope, caps);
    const pipelining = caps.pipelining && this.#opts.pipelining !== false;
    const bdat = envelope.body === "BINARYMIME" || (plan.bdat && this.#opts.chunking !== false);
    const addresses = envelope.recipients.map((r) => r.address);
    const result: SendResult = {
      mail: { code: 0, lines: [] },
      recipients: [],
      accepted: [],
      delivered: [],
      prdr: false,
      dsnPassed: plan.dsn,
      method: "none",
    };

    // Envelope: with PIPELINING, MAIL + all RCPTs (+ DATA) go in one write; replies come back in order.
    const pipeData = pipelining && !bdat;
    // A 421 ends the session (RFC 5321 3.8): replies still owed will never come, so it answers them all.
    let closing: Reply | undefined;
    const next = async (stage: ClientStage, timeout: number, line?: string): Promise<Reply> => {
      if (closing) return closing;
      const r = line === undefined
        ? await this.#conn.readReply(stage, timeout)
        : await this.#command(line, stage, timeout);
      if (r.code === 421) closing = r;
      return r;
    };
    if (pipelining) {
      await this.#write(plan.mail + plan.rcpts.join("") + (pipeData ? "DATA\r\n" : ""), "mail", this.#t.mail);
      result.mail = await next("mail", this.#t.mail);
      for (const address of addresses) {
        const r = await next("rcpt", this.#t.rcpt);
        result.recipients.push(this.#rcptResult(address, r, result.mail));
      }
    } else {
      result.mail = await next("mail", this.#t.mail, plan.mail);
      for (let i = 0; i < addresses.length; i++) {
        if (!isOk(result.mail)) {
          result.recipients.push({
            address: addresses[i],
            reply: result.mail,
            stage: "mail",
            delivered: false,
          });
          continue;
        }
        const r = await next("rcpt", this.#t.rcpt, plan.rcpts[i]);
        result.recipients.push(this.#rcptResult(addresses[i], r, result.mail));
      }
    }
    result.accepted = result.recipients.filter((r) => r.rcpt && isOk(r.rcpt) && isOk(result.mail))
      .map((r) => r.address);

    if (pipeData) {
      result.dataCommand = await next("data", this.#t.dataInit);
      if (result.dataCommand.code === 354 && result.accepted.length === 0) {
        // The peer took DATA although nothing was accepted (RFC 2920 3.1 says it must not): end it empty.
        await this.#write(".\r\n", "data", this.#t.dataBlock);
        await this.#conn.readReply("data", this.#t.dataFinal);
      }
    }
    if (result.accepted.length === 0) {
      if (isOk(result.mail)) await this.#quietReset();
      return result;
    }

    if (closing) {
      this.#settle(result, closing, bdat ? "bdat" : "data");
      return result;
    }
    if (bdat) {
      result.method = "bdat";
      await this.#sendBdat(data, result, plan.prdr, options.beforeData);
    } else {
      result.method = "data";
      if (!pipeData) result.dataCommand = await next("data", this.#t.dataInit, "DATA");
      const cmd = result.dataCommand!;
      if (cmd.code !== 354) {
        this.#settle(result, cmd, "data");
        await this.#quietReset();
        return result;
      }
      await options.beforeData?.();
      // Piece by piece: a large message is never copied whole; each piece gets the data-block timeout.
      for (const piece of encodeDataPieces(data)) await this.#write(piece, "data", this.#t.dataBlock);
      await this.#readFinal(result, "data", plan.prdr);
    }
    if (!result.data || !isOk(result.data)) await this.#quietReset();
    return result;
  }

  /** Sends RSET; a non-2xx reply throws (stage "rset"). */
  async rset(): Promise<Reply> {
    if (this.#state === "new") throw this.#local("rset", "Greeting not read yet");
    const r = await this.#command("RSET", "rset");
    if (!isOk(r)) throw new SmtpClientError("rset", "reply", r);
    return r;
  }

  /** Sends QUIT, waits briefly for 221 and closes the connection; never throws for a peer that hangs up. */
  async quit(): Promise<Reply | undefined> {
    if (this.#conn.closed) return undefined;
    try {
      // A peer that never answers QUIT must not hold the delivery slot for a whole command timeout.
      return await this.#command("QUIT", "quit", Math.min(this.#t.command, 10_000));
    } catch {
      return undefined;
    } finally {
      this.#conn.close();
    }
  }

  /** Closes the connection without QUIT. */
  close(): void {
    this.#conn.close();
  }

  async #sendBdat(
    data: Uint8Array,
    result: SendResult,
    prdr: boolean,
    beforeLast?: () => Promise<void>,
  ): Promise<void> {
    const size = Math.max(1, this.#opts.chunkSize ?? 1024 * 1024);
    // One frame buffer for every chunk (each is written out before the next is built): a new one per chunk
    // would leave garbage the size of the message before the collector runs.
    const frames = new Uint8Array(Math.min(size, data.length) + 32);
    let off = 0;
    do {
      const chunk = data.subarray(off, off + size);
      off += chunk.length;
      const last = off >= data.length;
      const head = encoder.encode(`BDAT ${chunk.length}${last ? " LAST" : ""}\r\n`);
      const frame = frames.subarray(0, head.length + chunk.length);
      frame.set(head);
      frame.set(chunk, head.length);
      if (last) await beforeLast?.();
      await this.#conn.write(frame, "bdat", this.#t.dataBlock);
      if (last) return await this.#readFinal(result, "bdat", prdr);
      const r = await this.#conn.readReply("bdat", this.#t.dataFinal);
      if (!isOk(r)) return this.#settle(result, r, "bdat");
    } while (off < data.length);
  }

  /** Reads the end-of-data reply, with PRDR's 353 and per-recipient replies when asked for. */
  async #readFinal(result: SendResult, stage: ClientStage, prdr: boolean): Promise<void> {
    const first = await this.#conn.readReply(stage, this.#t.dataFinal);
    if (!prdr || first.code !== 353) return this.#settle(result, first, stage);
    result.prdr = true;
    const accepted = result.recipients.filter((rec) => rec.rcpt && isOk(rec.rcpt));
    const perRcpt: Reply[] = [];
    for (let i = 0; i < accepted.length; i++) {
      perRcpt.push(await this.#conn.readReply(stage, this.#t.dataFinal));
    }
    const final = await this.#conn.readReply(stage, this.#t.dataFinal);
    result.data = final;
    accepted.forEach((rec, i) => {
      rec.prdr = perRcpt[i];
      // Per-recipient replies decide, unless the final reply fails the whole message.
      rec.reply = isOk(final) ? perRcpt[i] : final;
      rec.stage = stage;
      rec.delivered = isOk(final) && isOk(perRcpt[i]);
    });
    result.delivered = result.recipients.filter((r) => r.delivered).map((r) => r.address);
  }

  /** Applies one data-phase reply to every accepted recipient. */
  #settle(result: SendResult, r: Reply, stage: ClientStage): void {
    result.data = r;
    for (const rec of result.recipients) {
      if (!rec.rcpt || !isOk(rec.rcpt)) continue;
      rec.reply = r;
      rec.stage = stage;
      rec.delivered = isOk(r);
    }
    result.delivered = result.recipients.filter((x) => x.delivered).map((x) => x.address);
  }

  #rcptResult(address: string, r: Reply, mail: Reply): RecipientResult {
    // After a failed MAIL the RCPT replies (503s) say nothing about the recipient: MAIL's reply decides.
    if (!isOk(mail)) return { address, rcpt: r, reply: mail, stage: "mail", delivered: false };
    return { address, rcpt: r, reply: r, stage: "rcpt", delivered: false };
  }

  /** RSET after a failed transaction; failure only means the connection is not reusable. */
  async #quietReset(): Promise<void> {
    if (this.#conn.closed) return;
    try {
      const r = await this.#command("RSET", "rset");
      if (!isOk(r)) this.#conn.close();
    } catch {
      this.#conn.close();
    }
  }

  async #command(line: string, stage: ClientStage, timeout = this.#t.command): Promise<Reply> {
    await this.#write(line.endsWith("\r\n") ? line : line + "\r\n", stage, timeout);
    return await this.#conn.readReply(stage, timeout);
  }

  async #write(text: string | Uint8Array, stage: ClientStage, timeout: number): Promise<void> {
    await this.#conn.write(typeof text === "string" ? encoder.encode(text) : text, stage, timeout);
  }

  #expectState(state: State, stage: ClientStage): void {
    if (this.#state !== state) throw this.#local(stage, `Unexpected ${stage} in state ${this.#state}`);
  }

  #local(stage: ClientStage, text: string): SmtpClientError {
    return new SmtpClientError(stage, "local", { code: 503, enhanced: "5.5.1", lines: [text] });
  }
}
