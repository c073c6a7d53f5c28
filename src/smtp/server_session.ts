/**
 * The SMTP server session (RFC 5321) with PIPELINING (RFC 2920), SIZE (1870), 8BITMIME (6152), SMTPUTF8 (6531),
 * ENHANCEDSTATUSCODES (2034, 3463), CHUNKING (3030), DSN (3461), PRDR (draft-hall-prdr-00), STARTTLS (3207)
 * and AUTH (4954; offered only on an encrypted session).
 * It parses and answers; what a transaction means (policy, spool) is the SessionHandler's business.
 * SECURITY: trusts nothing from the client. Input before the banner or unsynchronised pipelining ends the
 * session (like Exim's smtp_enforce_sync); plaintext pipelined behind STARTTLS is discarded. Each command
 * line and each message's whole content must arrive by a deadline, not merely keep trickling (slowloris).
 */

import { formatReply, type Reply, reply, replyForError, SmtpError } from "../core/reply.ts";
import { type ByteStream, isConnectionLost, writeAll } from "../core/stream.ts";
import type { TlsInfo } from "../core/envelope.ts";
import { parseCommand, parsePathArg } from "./command.ts";
import { DataScanner } from "./data_scanner.ts";
import { parseMailParams, parseRcptParams } from "./transaction_params.ts";
import { Input, ReadTimeoutError } from "./input.ts";
import type { RcptEntry, ServerSessionOptions, SessionHandler, Transaction } from "./session_types.ts";
import { errorMessage } from "../core/error_message.ts";
import { AUTH_LINE_MAX, collectCredentials } from "./server_auth.ts";
import type { SaslMechanism } from "./sasl.ts";
import { after } from "../core/deadlines.ts";

const encoder = new TextEncoder();

/** What reads of DATA content ask for once it comes (Input.expect), unless the client declared a larger SIZE. */
const CONTENT_READ = 16 * 1024;

/** Who the client authenticated as (RFC 4954). */
export interface SessionLogin {
  mechanism: SaslMechanism;
  /** The authentication identity (the login) */
  user: string;
  /** The authorisation identity, when the client gave one */
  authzid?: string;
}

/** Why a session ended. */
class SessionEnd extends Error {}

/** One SMTP server conversation over a byte stream. */
export class ServerSession {
  #opts: ServerSessionOptions;
  #handler: SessionHandler;
  #stream: ByteStream;
  #input: Input;
  #out: string[] = [];
  #helo?: string;
  #esmtp = false;
  #tls?: TlsInfo;
  #tx?: Transaction;
  #auth?: SessionLogin;
  #scanner?: DataScanner;
  /** When the content of the open BDAT transaction must be complete (performance.now() time) */
  #bdatDeadline?: number;
  #badCommands = 0;
  #stopping = false;
  #idle = false;
  #closed = false;
  #wake?: () => void;
  /** The read started during the greeting delay, still waiting for the client's first command */
  #firstFill?: Promise<boolean>;

  constructor(stream: ByteStream, handler: SessionHandler, opts: ServerSessionOptions) {
    this.#stream = stream;
    this.#handler = handler;
    this.#opts = opts;
    this.#input = new Input(stream);
    this.#tls = opts.tls;
    if (opts.initialInput?.length) this.#input.unshift(opts.initialInput);
  }

  /** The HELO/EHLO name, once given. */
  get helo(): string | undefined {
    return this.#helo;
  }

  /** TLS facts once the session is encrypted. */
  get tls(): TlsInfo | undefined {
    return this.#tls;
  }

  /** The login, once AUTH succeeded. */
  get auth(): SessionLogin | undefined {
    return this.#auth;
  }

  /** True while a mail transaction is open. */
  get inTransaction(): boolean {
    return this.#tx !== undefined;
  }

  /** Asks the session to end: at once when idle, otherwise after the current transaction. */
  requestStop(): void {
    this.#stopping = true;
    if (this.#idle && !this.#tx) this.#wake?.();
  }

  /** Ends the session now with a 421 (graceful-stop deadline passed). */
  async forceStop(): Promise<void> {
    if (this.#closed) return;
    this.#out.push(formatReply(reply(421, "4.3.2", `${this.#opts.hostname} Service shutting down`)));
    await this.#flush().catch(() => {});
    this.#close("shutdown");
  }

  /** Runs the session to its end; never throws. */
  async run(): Promise<void> {
    let reason = "client closed connection";
    try {
      await this.#greet();
      await this.#loop();
    } catch (err) {
      if (err instanceof SessionEnd) reason = err.message;
      else if (err instanceof ReadTimeoutError) reason = "timeout";
      else if (isConnectionLost(err)) reason = "connection lost";
      else reason = `connection error: ${errorMessage(err)}`;
    } finally {
      this.#close(reason);
    }
  }

  #close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#stream.close();
    } catch { /* already closed */ }
    try {
      this.#handler.closed?.(reason);
    } catch { /* a handler's problem is not the session's */ }
  }

  #send(r: Reply): void {
    this.#out.push(formatReply(r));
  }

  async #flush(): Promise<void> {
    if (this.#out.length === 0) return;
    const text = this.#out.join("");
    this.#out = [];
    // A client that pipelines and never reads its replies would hold the session in this write for ever:
    // the write gets the command deadline, and the connection is closed under it when that passes.
    let stalled = false;
    const cancel = after(this.#opts.limits.commandTimeoutMs, () => {
      stalled = true;
      try {
        this.#stream.close();
      } catch { /* already closed */ }
    });
    try {
      await writeAll(this.#stream, encoder.encode(text));
    } catch (err) {
      if (stalled) throw new SessionEnd("timeout sending reply");
      throw err;
    } finally {
      cancel();
    }
  }

  async #fatal(r: Reply, why: string): Promise<never> {
    this.#send(r);
    await this.#flush().catch(() => {});
    throw new SessionEnd(why);
  }

  async #greet(): Promise<void> {
    const { limits } = this.#opts;
    if (limits.greetingDelayMs > 0 && !this.#input.pending) {
      // The read outlives the delay: a read abandoned at the delay would swallow a polite client's EHLO.
      const first = this.#input.fill(limits.greetingDelayMs + limits.commandTimeoutMs);
      first.catch(() => {});
      let timer: ReturnType<typeof setTimeout> | undefined;
      const quiet = await Promise.race([
        first.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), limits.greetingDelayMs))),
      ]).finally(() => clearTimeout(timer));
      if (quiet) this.#firstFill = first;
    }
    if (this.#input.pending) {
      const r = reply(554, "5.5.0", "SMTP synchronization error");
      this.#handler.protocolError?.(r, "input before the greeting");
      await this.#fatal(r, "synchronization error before greeting");
    }
    if (this.#input.eof) throw new SessionEnd("client closed before greeting");
    try {
      await this.#handler.connect?.();
    } catch (err) {
      const r = replyForError(err);
      // RFC 5321 4.3.2 allows only 554 (and 421, 3.8) instead of the greeting: a 550 from policy becomes 554.
      const greeting = r.code >= 500
        ? reply(554, r.enhanced ?? "5.7.1", r.lines)
        : reply(421, r.enhanced ?? "4.3.0", r.lines);
      await this.#fatal(greeting, "refused at connect");
    }
    this.#send(reply(220, undefined, `${this.#opts.hostname} ${this.#opts.banner}`));
    await this.#flush();
  }

  async #readLine(max?: number): Promise<string | undefined>;
  async #readLine(max: number, tooLong: "return"): Promise<string | { tooLong: true } | undefined>;
  /** Reads a line; an over-long one is refused here (500 5.5.2), or returned as it is with `tooLong`. */
  async #readLine(
    max = this.#opts.limits.commandLine,
    tooLong?: "return",
  ): Promise<string | { tooLong: true } | undefined> {
    const { limits } = this.#opts;
    // The whole line must arrive by then: a deadline, not an idle timer a trickle of octets restarts.
    let deadline = performance.now() + limits.commandTimeoutMs;
    for (;;) {
      const got = this.#input.takeLine(max);
      if (got && "line" in got) return got.line;
      if (got && "tooLong" in got) {
        if (tooLong) return got;
        await this.#bad(reply(500, "5.5.2", "Line too long"), "command line too long");
        deadline = performance.now() + limits.commandTimeoutMs;
        continue;
      }
      await this.#flush();
      if (this.#stopping && !this.#tx) {
        await this.#fatal(reply(421, "4.3.2", `${this.#opts.hostname} Service shutting down`), "shutdown");
      }
      // Waiting for a command outside a transaction is where connections idle: keep them small.
      if (!this.#tx) this.#input.release();
      this.#idle = true;
      const wake = new Promise<boolean>((resolve) => (this.#wake = () => resolve(true)));
      try {
        const fill = this.#firstFill ?? this.#input.fill(deadline - performance.now());
        this.#firstFill = undefined;
        const more = await Promise.race([fill, wake]);
        if (more === false) return undefined;
      } catch (err) {
        if (err instanceof ReadTimeoutError) {
          await this.#fatal(
            reply(421, "4.4.2", `${this.#opts.hostname} Timeout waiting for command, closing connection`),
            "timeout waiting for command",
          );
        }
        throw err;
      } finally {
        this.#idle = false;
        this.#wake = undefined;
      }
    }
  }

  async #bad(r: Reply, detail: string): Promise<void> {
    this.#send(r);
    this.#handler.protocolError?.(r, detail);
    if (++this.#badCommands >= this.#opts.limits.badCommands) {
      await this.#fatal(
        reply(421, "4.7.0", `${this.#opts.hostname} Too many errors, closing connection`),
        "too many errors",
      );
    }
  }

  /** After a command that must end a pipelined group, more buffered input is a synchronisation error. */
  async #requireSync(what: string): Promise<void> {
    if (this.#input.pending === 0) return;
    const r = reply(554, "5.5.0", "SMTP synchronization error");
    this.#handler.protocolError?.(r, `pipelined input after ${what}`);
    await this.#fatal(r, "synchronization error");
  }

  async #loop(): Promise<void> {
    for (;;) {
      const line = await this.#readLine();
      if (line === undefined) return;
      const { verb, arg } = parseCommand(line);
      if (this.#opts.refuseAll && verb !== "QUIT") {
        this.#send(this.#opts.refuseAll);
        continue;
      }
      // A BDAT chunk follows its command at once (RFC 3030 2), so BDAT checks sync after its chunk.
      const chunk = verb === "BDAT" && this.#esmtp && this.#opts.extensions.chunking;
      if (!(this.#esmtp && this.#opts.extensions.pipelining) && verb !== "QUIT" && !chunk) {
        await this.#requireSync(verb || "command");
      }
      try {
        await this.#dispatch(verb, arg);
      } catch (err) {
        // A vanished client is the end of the conversation, not an error to answer (there is no one to read it).
        if (err instanceof SessionEnd || err instanceof ReadTimeoutError || isConnectionLost(err)) throw err;
        const r = replyForError(err);
        if (err instanceof SmtpError && err.close) await this.#fatal(r, "closed by policy");
        if (!(err instanceof SmtpError)) this.#handler.protocolError?.(r, `internal error: ${String(err)}`);
        this.#send(r);
      }
    }
  }

  async #dispatch(verb: string, arg: string): Promise<void> {
    switch (verb) {
      case "EHLO":
      case "HELO":
        return await this.#heloCmd(verb === "EHLO", arg);
      case "MAIL":
        return await this.#mailCmd(arg);
      case "RCPT":
        return await this.#rcptCmd(arg);
      case "DATA":
        return await this.#dataCmd(arg);
      case "BDAT":
        return await this.#bdatCmd(arg);
      case "RSET":
        if (arg) return await this.#bad(reply(501, "5.5.4", "RSET takes no argument"), "RSET with argument");
        this.#resetTx();
        return this.#send(reply(250, "2.0.0", "Reset OK"));
      case "NOOP":
        return this.#send(reply(250, "2.0.0", "OK"));
      case "QUIT":
        await this.#fatal(reply(221, "2.0.0", `${this.#opts.hostname} closing connection`), "QUIT");
        return;
      case "VRFY":
        if (!arg) {
          return await this.#bad(reply(501, "5.5.4", "VRFY needs an argument"), "VRFY without argument");
        }
        return this.#send(
          reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"),
        );
      case "EXPN":
        if (!arg) {
          return await this.#bad(reply(501, "5.5.4", "EXPN needs an argument"), "EXPN without argument");
        }
        return this.#send(reply(502, "5.5.1", "EXPN not available"));
      case "HELP":
        return this.#send(
          reply(214, "2.0.0", [
            "Commands supported:",
            "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP" +
            (this.#opts.extensions.startTls && !this.#tls ? " STARTTLS" : ""),
          ]),
        );
      case "STARTTLS":
        return await this.#startTlsCmd(arg);
      case "AUTH":
        return await this.#authCmd(arg);
      case "GET":
      case "POST":
      case "PUT":
      case "HEAD":
      case "CONNECT": {
        const r = reply(554, "5.7.0", "This is an SMTP server");
        this.#handler.protocolError?.(r, `HTTP command "${verb}" on SMTP port`);
        await this.#fatal(r, "HTTP request on SMTP port");
        return;
      }
      case "":
        return await this.#bad(reply(500, "5.5.2", "Syntax error, empty command"), "empty command");
      default:
        return await this.#bad(
          reply(500, "5.5.1", "Command unrecognized"),
          `unknown command "${verb.slice(0, 32)}"`,
        );
    }
  }

  #resetTx(): void {
    const had = this.#tx !== undefined;
    this.#tx = undefined;
    this.#scanner = undefined;
    this.#bdatDeadline = undefined;
    if (had) this.#handler.reset?.();
  }

  async #heloCmd(esmtp: boolean, arg: string): Promise<void> {
    if (!arg || /\s/.test(arg)) {
      return await this.#bad(
        reply(501, "5.5.4", `Syntax: ${esmtp ? "EHLO" : "HELO"} hostname`),
        "bad HELO/EHLO",
      );
    }
    this.#resetTx();
    await this.#handler.helo?.(arg, esmtp);
    this.#helo = arg;
    this.#esmtp = esmtp;
    const greeting = `${this.#opts.hostname} Hello ${arg} [${this.#opts.clientIp}]`;
    if (!esmtp) return this.#send(reply(250, undefined, greeting));
    const x = this.#opts.extensions;
    const lines = [greeting, `SIZE ${this.#opts.limits.messageSize}`, "8BITMIME"];
    if (x.pipelining) lines.push("PIPELINING");
    if (x.chunking) lines.push("CHUNKING");
    if (x.dsn) lines.push("DSN");
    if (x.smtputf8) lines.push("SMTPUTF8");
    if (x.prdr) lines.push("PRDR");
    if (x.startTls && !this.#tls) lines.push("STARTTLS");
    if (this.#tls) lines.push("REQUIRETLS"); // RFC 8689 §4.1: only over TLS
    if (this.#authOffered) lines.push(`AUTH ${this.#opts.auth!.mechanisms.join(" ")}`);
    lines.push("ENHANCEDSTATUSCODES", "HELP");
    this.#send(reply(250, undefined, lines));
    if (x.pipelining) await this.#requireSync("EHLO");
  }

  async #mailCmd(arg: string): Promise<void> {
    if (!this.#helo) return await this.#bad(reply(503, "5.5.1", "EHLO or HELO first"), "MAIL before HELO");
    if (this.#tx) return await this.#bad(reply(503, "5.5.1", "Nested MAIL command"), "nested MAIL");
    if (this.#opts.auth?.required && !this.#auth) {
      return await this.#bad(
        reply(530, "5.7.0", "Authentication required"),
        "MAIL before AUTH on submission",
      );
    }
    if (this.#stopping) {
      throw new SmtpError(421, "4.3.2", `${this.#opts.hostname} Service shutting down`, { close: true });
    }
    let tx: Transaction;
    try {
      // A UTF-8 reverse path needs the SMTPUTF8 parameter on this very command (RFC 6531 3.4).
      const path = parsePathArg(arg, "MAIL", false);
      // RFC 4954 5: a server offering AUTH accepts AUTH=; Ferry does not trust a client's claim about the
      // original submitter, so the value is dropped.
      if (this.#authOffered && this.#esmtp) path.params.delete("AUTH");
      const params = parseMailParams(path.params, {
        extensions: this.#opts.extensions,
        esmtp: this.#esmtp,
        maxSize: this.#opts.limits.messageSize,
        tls: this.#tls !== undefined,
      });
      tx = { sender: path.address, senderMailbox: path.mailbox, params, recipients: [] };
    } catch (err) {
      if (err instanceof SmtpError && err.code >= 500 && err.code !== 552) {
        return await this.#bad(err.toReply(), `bad MAIL: ${arg.slice(0, 100)}`);
      }
      if (err instanceof SmtpError) this.#handler.refused?.(err.toReply(), `MAIL ${arg.slice(0, 200)}`);
      throw err;
    }
    await this.#handler.mail?.(tx);
    this.#tx = tx;
    this.#send(reply(250, "2.1.0", "Sender OK"));
  }

  async #rcptCmd(arg: string): Promise<void> {
    const tx = this.#tx;
    if (!tx) return await this.#bad(reply(503, "5.5.1", "MAIL first"), "RCPT before MAIL");
    if (tx.via) return await this.#bad(reply(503, "5.5.1", "RCPT after data"), "RCPT after BDAT");
    let entry: RcptEntry;
    try {
      const path = parsePathArg(arg, "RCPT", tx.params.smtputf8);
      entry = {
        address: path.address,
        mailbox: path.mailbox,
        ...parseRcptParams(path.params, this.#opts.extensions),
      };
    } catch (err) {
      if (err instanceof SmtpError && err.code >= 500) {
        return await this.#bad(err.toReply(), `bad RCPT: ${arg.slice(0, 100)}`);
      }
      throw err;
    }
    // The same recipient twice would be delivered twice: accept the repeat, keep one.
    if (tx.recipients.some((r) => r.address === entry.address) || this.#handler.repeats?.(tx, entry)) {
      return this.#send(reply(250, "2.1.5", "Recipient OK (duplicate ignored)"));
    }
    if (tx.recipients.length >= this.#opts.limits.recipients) {
      const tooMany = new SmtpError(452, "4.5.3", "Too many recipients");
      this.#handler.refused?.(tooMany.toReply(), `RCPT <${entry.address}> F=<${tx.sender}>`);
      throw tooMany;
    }
    await this.#handler.rcpt?.(tx, entry);
    tx.recipients.push(entry);
    this.#send(reply(250, "2.1.5", "Recipient OK"));
  }

  #newScanner(mode: "data" | "bdat"): DataScanner {
    const { limits } = this.#opts;
    return new DataScanner({
      maxSize: limits.messageSize,
      maxLine: limits.textLine,
      bareLineEndings: this.#opts.bareLineEndings,
      mode,
      // The declared SIZE lets the scanner keep the message in one buffer from the start (no join copy).
      expectedSize: this.#tx?.params.size,
      memory: this.#opts.dataMemory,
    });
  }

  async #dataCmd(arg: string): Promise<void> {
    if (arg) return await this.#bad(reply(501, "5.5.4", "DATA takes no argument"), "DATA with argument");
    const tx = this.#tx;
    if (!tx) return await this.#bad(reply(503, "5.5.1", "MAIL first"), "DATA before MAIL");
    if (tx.via === "BDAT") return await this.#bad(reply(503, "5.5.1", "DATA after BDAT"), "DATA after BDAT");
    if (tx.recipients.length === 0) {
      this.#resetTx();
      return this.#send(reply(554, "5.5.1", "No valid recipients"));
    }
    await this.#requireSync("DATA");
    await this.#handler.data?.(tx);
    tx.via = "DATA";
    const scanner = this.#newScanner("data");
    this.#send(reply(354, undefined, 'Enter message, ending with "." on a line by itself'));
    await this.#flush();
    const deadline = performance.now() + this.#opts.limits.dataTimeoutMs;
    this.#input.expect(Math.max(tx.params.size ?? 0, CONTENT_READ));
    for (;;) {
      const view = this.#input.peek();
      const { consumed, ended } = scanner.feed(view);
      this.#input.advance(consumed);
      if (ended) break;
      if (!(await this.#fillData(deadline))) throw new SessionEnd("connection lost during DATA");
    }
    await this.#endOfMessage(tx, scanner);
  }

  /** Reads more content; the message's whole content is due by `deadline` (a performance.now() time). */
  async #fillData(deadline: number): Promise<boolean> {
    try {
      return await this.#input.fill(deadline - performance.now());
    } catch (err) {
      if (err instanceof ReadTimeoutError) await this.#dataTimeout();
      throw err;
    }
  }

  async #dataTimeout(): Promise<never> {
    return await this.#fatal(
      reply(421, "4.4.2", `${this.#opts.hostname} Timeout waiting for data, closing connection`),
      "timeout waiting for data",
    );
  }

  async #bdatCmd(arg: string): Promise<void> {
    const m = /^(\d{1,15})(?: +(LAST))?$/i.exec(arg);
    if (!this.#opts.extensions.chunking || !this.#esmtp) {
      return await this.#bad(reply(500, "5.5.1", "Command unrecognized"), "BDAT without CHUNKING");
    }
    if (!m) return await this.#bad(reply(501, "5.5.4", "Syntax: BDAT size [LAST]"), "bad BDAT");
    const size = Number(m[1]);
    const last = m[2] !== undefined;
    const tx = this.#tx;
    // The chunk is always read, even when the command is refused (RFC 3030 2).
    let scanner = this.#scanner;
    let refusal: Reply | undefined;
    if (!tx) refusal = reply(503, "5.5.1", "MAIL first");
    else if (tx.via === "DATA") refusal = reply(503, "5.5.1", "BDAT after DATA");
    else if (tx.recipients.length === 0) refusal = reply(554, "5.5.1", "No valid recipients");
    if (!refusal && tx && !tx.via) {
      try {
        await this.#handler.data?.(tx);
      } catch (err) {
        refusal = replyForError(err);
      }
      if (!refusal) {
        tx.via = "BDAT";
        scanner = this.#scanner = this.#newScanner("bdat");
        this.#bdatDeadline = performance.now() + this.#opts.limits.dataTimeoutMs;
      }
    }
    // All chunks of one message share one deadline, or a client could trickle small chunks for ever.
    const deadline = this.#bdatDeadline ?? performance.now() + this.#opts.limits.dataTimeoutMs;
    if (performance.now() >= deadline) await this.#dataTimeout();
    let remaining = size;
    const sink = refusal ? undefined : scanner;
    if (sink) this.#input.expect(remaining);
    while (remaining > 0) {
      if (this.#input.pending === 0 && !(await this.#fillData(deadline))) {
        throw new SessionEnd("connection lost during BDAT");
      }
      const view = this.#input.peek();
      const take = Math.min(remaining, view.length);
      sink?.feed(view.subarray(0, take));
      this.#input.advance(take);
      remaining -= take;
    }
    if (!this.#opts.extensions.pipelining) await this.#requireSync("BDAT chunk");
    if (refusal) {
      if (tx && refusal.code >= 500 && tx.via !== "DATA") this.#resetTx();
      this.#send(refusal);
      this.#handler.protocolError?.(refusal, "BDAT refused");
      return;
    }
    if (!last) return this.#send(reply(250, "2.0.0", `${size} octets received`));
    scanner!.finish();
    await this.#endOfMessage(tx!, scanner!);
  }

  async #endOfMessage(tx: Transaction, scanner: DataScanner): Promise<void> {
    try {
      let problem: Reply | undefined;
      if (scanner.tooBig) problem = reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
      else if (scanner.bareLineEnding && this.#opts.bareLineEndings === "reject") {
        problem = reply(550, "5.6.0", "Message contains bare CR or LF characters, which are not allowed");
      } else if (scanner.lineTooLong) {
        problem = reply(550, "5.6.0", `Message has a line longer than ${this.#opts.limits.textLine} octets`);
      } else if (scanner.overMemory) {
        // limits.dataMemory: too many messages being received at once to keep this one as well; later it fits.
        problem = reply(452, "4.3.1", "Insufficient system resources, try again later");
      }
      if (problem) {
        this.#send(problem);
        this.#handler.protocolError?.(problem, "message content refused");
        return;
      }
      const outcome = await this.#handler.message(tx, scanner.data(), {
        size: scanner.data().length,
        normalized: scanner.bareLineEnding,
      });
      if ("prdr" in outcome) {
        this.#send(reply(353, undefined, "PRDR content analysis beginning"));
        for (const r of outcome.prdr) this.#send(r);
        this.#send(outcome.final);
      } else {
        this.#send(outcome.reply);
      }
    } catch (err) {
      if (err instanceof SmtpError && err.close) await this.#fatal(err.toReply(), "closed by policy");
      this.#send(replyForError(err));
    } finally {
      scanner.finished();
      this.#resetTx();
    }
  }

  /** AUTH is offered once the session is encrypted and credentials are configured. */
  get #authOffered(): boolean {
    return this.#opts.auth !== undefined && this.#tls !== undefined &&
      this.#handler.authenticate !== undefined;
  }

  async #authCmd(arg: string): Promise<void> {
    const auth = this.#opts.auth;
    if (!auth || !this.#handler.authenticate) {
      return await this.#bad(reply(502, "5.5.1", "AUTH not available"), "AUTH not offered");
    }
    if (!this.#esmtp) return await this.#bad(reply(503, "5.5.1", "EHLO first"), "AUTH before EHLO");
    if (!this.#tls) {
      return await this.#bad(
        reply(538, "5.7.11", "Encryption required for requested authentication mechanism"),
        "AUTH before TLS",
      );
    }
    if (this.#auth) return await this.#bad(reply(503, "5.5.1", "Already authenticated"), "AUTH twice");
    if (this.#tx) {
      return await this.#bad(
        reply(503, "5.5.1", "AUTH not permitted during a mail transaction"),
        "AUTH in transaction",
      );
    }
    // AUTH must end a pipelined group, except with an initial response for a mechanism that completes in that
    // one round trip, such as PLAIN (RFC 4954 4): then the client may pipeline MAIL and RCPT behind it.
    const [mechanism, initial] = arg.split(/ +/);
    if (!(initial !== undefined && mechanism.toUpperCase() === "PLAIN")) await this.#requireSync("AUTH");
    const got = await collectCredentials(arg, auth.mechanisms, {
      challenge: async (r) => {
        this.#send(r);
        await this.#flush();
        return await this.#readLine(AUTH_LINE_MAX, "return");
      },
    });
    if ("refusal" in got) {
      if (got.refusal.code === 421) throw new SessionEnd("connection lost during AUTH");
      return await this.#bad(got.refusal, got.detail);
    }
    const ok = await this.#handler.authenticate(got.mechanism, got.credentials);
    if (!ok) return this.#send(reply(535, "5.7.8", "Authentication credentials invalid"));
    const { authcid, authzid } = got.credentials;
    this.#auth = { mechanism: got.mechanism, user: authcid, authzid: authzid || undefined };
    this.#send(reply(235, "2.7.0", "Authentication successful"));
  }

  async #startTlsCmd(arg: string): Promise<void> {
    if (!this.#opts.extensions.startTls || !this.#handler.startTls) {
      return await this.#bad(reply(502, "5.5.1", "STARTTLS not available"), "STARTTLS not offered");
    }
    if (this.#tls) return await this.#bad(reply(503, "5.5.1", "TLS already active"), "STARTTLS twice");
    if (arg) {
      return await this.#bad(reply(501, "5.5.4", "STARTTLS takes no argument"), "STARTTLS with argument");
    }
    if (!this.#esmtp) return await this.#bad(reply(503, "5.5.1", "EHLO first"), "STARTTLS before EHLO");
    this.#send(reply(220, "2.0.0", "Ready to start TLS"));
    await this.#flush();
    // Anything the client pipelined behind STARTTLS was sent in clear: it must not be obeyed (CVE-2011-0411).
    const dropped = this.#input.discard();
    if (dropped > 0) {
      this.#handler.protocolError?.(
        reply(220, "2.0.0", ""),
        `discarded ${dropped} octets pipelined after STARTTLS`,
      );
    }
    let upgraded: { stream: ByteStream; info: TlsInfo };
    try {
      upgraded = await this.#handler.startTls(this.#stream);
    } catch (err) {
      throw new SessionEnd(`TLS handshake failed: ${errorMessage(err)}`);
    }
    this.#stream = upgraded.stream;
    this.#input.setStream(upgraded.stream);
    this.#tls = upgraded.info;
    // RFC 3207 4.2: forget everything learnt before TLS; the client must EHLO again.
    this.#resetTx();
    this.#helo = undefined;
    this.#esmtp = false;
  }
}
