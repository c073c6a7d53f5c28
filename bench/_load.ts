/**
 * SMTP load generator for the benchmark (RFC 5321 client side, RFC 2920 PIPELINING, RFC 3207 STARTTLS).
 *
 * Runs N concurrent clients over Deno.connect; each opens one or more SMTP sessions one after another
 * and sends M transactions back to back on each, optionally after STARTTLS (Deno.startTls, rustls, the
 * same client for every target; the server must present a chain to the given CA). Measures
 * per-transaction latency (MAIL sent → 250 after DATA), session set-up time (connect → ready for MAIL,
 * including STARTTLS and the second EHLO) and throughput. Trusts nothing from the server: every reply is
 * checked and every transaction that does not end in 250 is counted as a failure. Loopback only.
 *
 * @module
 */

import { concatBytes } from "../src/core/bytes.ts";

/** What to send and how hard. */
export interface LoadOptions {
  /** Target host (loopback). */
  host: string;
  /** Target port. */
  port: number;
  /** Concurrent SMTP sessions. */
  sessions: number;
  /** Transactions sent over each session. */
  messagesPerSession: number;
  /** Body size in bytes (headers excluded). */
  bodyBytes: number;
  /** Envelope sender. */
  from: string;
  /** Envelope recipient. */
  to: string;
  /** Envelope recipients of every message (default `[to]`); one RCPT each. */
  recipients?: string[];
  /** SMTP sessions each client opens one after another (default 1); `messagesPerSession` on each. */
  sessionsPerClient?: number;
  /** Do STARTTLS after the first EHLO, then EHLO again; the server's chain must lead to `caCerts`. */
  starttls?: { caCerts: string[]; hostname: string };
  /** Per-reply deadline in milliseconds. */
  replyTimeoutMs?: number;
}

/** Outcome of one load run. */
export interface LoadResult {
  /** Transactions that ended in 250. */
  ok: number;
  /** Transactions or sessions that failed. */
  failed: number;
  /** Up to 10 distinct failure descriptions. */
  failures: string[];
  /** Wall-clock duration in milliseconds (first connect to last QUIT). */
  elapsedMs: number;
  /** Successful transactions per second. */
  msgsPerSec: number;
  /** Median transaction latency, ms. */
  p50Ms: number;
  /** 99th-percentile transaction latency, ms. */
  p99Ms: number;
  /** Whether the server advertised PIPELINING (first session). */
  pipelining: boolean;
  /** performance.now() when the run started. */
  startedAt: number;
  /** performance.now() of every 250 after the final dot, in the order they arrived. */
  acceptedAt: number[];
  /** SMTP sessions that got ready for MAIL. */
  sessions: number;
  /** Median session set-up time (connect → ready for MAIL, STARTTLS included), ms. */
  setupP50Ms: number;
  /** 99th-percentile session set-up time, ms. */
  setupP99Ms: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One parsed SMTP reply. */
interface Reply {
  code: number;
  lines: string[];
}

/**
 * Readers waiting for a reply, with when they started to wait: one watchdog for all of them closes the
 * connection of any that waited past its deadline (a timer armed and cleared for every read would cost the
 * load generator CPU that the target under test then lacks).
 */
const waiting = new Map<ReplyReader, number>();
let watchdog: ReturnType<typeof setInterval> | undefined;

function watch(reader: ReplyReader): void {
  waiting.set(reader, performance.now());
  watchdog ??= setInterval(() => {
    const now = performance.now();
    for (const [r, since] of waiting) if (now - since > r.timeoutMs) r.expire();
    if (waiting.size === 0) {
      clearInterval(watchdog);
      watchdog = undefined;
    }
  }, 100);
}

/** Buffered reader of SMTP replies over a Deno.Conn, with a deadline per reply. */
class ReplyReader {
  #conn: Deno.Conn;
  #buf = new Uint8Array(16 * 1024);
  #start = 0;
  #end = 0;
  #expired = false;
  readonly timeoutMs: number;

  constructor(conn: Deno.Conn, timeoutMs: number) {
    this.#conn = conn;
    this.timeoutMs = timeoutMs;
  }

  /** The wait passed its deadline: the connection is closed, which fails the read. */
  expire(): void {
    waiting.delete(this);
    this.#expired = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  async #readLine(): Promise<string> {
    for (;;) {
      const nl = this.#buf.indexOf(10, this.#start);
      if (nl >= 0 && nl < this.#end) {
        const end = nl > this.#start && this.#buf[nl - 1] === 13 ? nl - 1 : nl;
        const line = decoder.decode(this.#buf.subarray(this.#start, end));
        this.#start = nl + 1;
        if (this.#start === this.#end) this.#start = this.#end = 0;
        return line;
      }
      if (this.#end === this.#buf.length) {
        // Full: move what is left to the front, or make room for a longer reply.
        const rest = this.#buf.subarray(this.#start, this.#end);
        const next = this.#start > 0 ? this.#buf : new Uint8Array(this.#buf.length * 2);
        next.set(rest);
        this.#buf = next;
        this.#end -= this.#start;
        this.#start = 0;
      }
      let n: number | null;
      watch(this);
      try {
        n = await this.#conn.read(this.#buf.subarray(this.#end));
      } catch (e) {
        throw new Error(`Read failed or timed out after ${this.timeoutMs} ms: ${(e as Error).message}`);
      } finally {
        waiting.delete(this);
      }
      if (n === null) {
        throw new Error(
          this.#expired ? `Read timed out after ${this.timeoutMs} ms` : "Connection closed by server",
        );
      }
      this.#end += n;
    }
  }

  /** Reads one (possibly multi-line) reply. */
  async read(): Promise<Reply> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.#readLine();
      if (!/^\d{3}([ -]|$)/.test(line)) throw new Error(`Malformed reply line "${line}"`);
      lines.push(line.slice(4));
      if (line[3] !== "-") return { code: Number(line.slice(0, 3)), lines };
    }
  }
}

/** Builds a dot-safe message of `bodyBytes` body bytes plus a few headers, ending in CRLF.CRLF. */
export function buildMessage(bodyBytes: number, from: string, to: string): Uint8Array {
  const head = `From: <${from}>\r\nTo: <${to}>\r\nSubject: ferry bench\r\n` +
    `Message-ID: <bench.${crypto.randomUUID()}@bench.test>\r\n\r\n`;
  const line = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef";
  let body = "";
  while (body.length + line.length + 2 <= bodyBytes) body += line + "\r\n";
  body += "x".repeat(Math.max(0, bodyBytes - body.length - 2)) + "\r\n";
  return encoder.encode(head + body + ".\r\n");
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

function expect(reply: Reply, code: number, what: string): void {
  if (reply.code !== code) {
    throw new Error(`${what}: expected ${code}, got ${reply.code} ${reply.lines.join(" | ")}`);
  }
}

interface SessionTally {
  ok: number;
  failed: number;
  latencies: number[];
  setups: number[];
  acceptedAt: number[];
  failures: string[];
  pipelining: boolean;
}

async function runSession(opts: LoadOptions, message: Uint8Array, tally: SessionTally): Promise<void> {
  const timeout = opts.replyTimeoutMs ?? 30_000;
  let conn: Deno.Conn | undefined;
  let done = 0;
  try {
    const tConnect = performance.now();
    const tcp = await Deno.connect({ hostname: opts.host, port: opts.port });
    conn = tcp;
    tcp.setNoDelay(true);
    let rd = new ReplyReader(conn, timeout);
    expect(await rd.read(), 220, "banner");
    await writeAll(conn, encoder.encode("EHLO load.bench.test\r\n"));
    let ehlo = await rd.read();
    expect(ehlo, 250, "EHLO");
    if (opts.starttls) {
      if (!ehlo.lines.some((l) => /^STARTTLS\b/i.test(l))) throw new Error("EHLO: no STARTTLS offered");
      await writeAll(conn, encoder.encode("STARTTLS\r\n"));
      expect(await rd.read(), 220, "STARTTLS");
      conn = await Deno.startTls(tcp, { caCerts: opts.starttls.caCerts, hostname: opts.starttls.hostname });
      rd = new ReplyReader(conn, timeout);
      await writeAll(conn, encoder.encode("EHLO load.bench.test\r\n"));
      ehlo = await rd.read();
      expect(ehlo, 250, "EHLO after STARTTLS");
    }
    tally.setups.push(performance.now() - tConnect);
    const pipelining = ehlo.lines.some((l) => /^PIPELINING\b/i.test(l));
    tally.pipelining ||= pipelining;
    const mail = encoder.encode(`MAIL FROM:<${opts.from}>\r\n`);
    const rcpts = (opts.recipients ?? [opts.to]).map((r) => encoder.encode(`RCPT TO:<${r}>\r\n`));
    const data = encoder.encode("DATA\r\n");
    const envelope = concatBytes([mail, ...rcpts, data]);
    for (let i = 0; i < opts.messagesPerSession; i++) {
      const t0 = performance.now();
      if (pipelining) {
        await writeAll(conn, envelope);
        expect(await rd.read(), 250, "MAIL");
        for (let r = 0; r < rcpts.length; r++) expect(await rd.read(), 250, "RCPT");
        expect(await rd.read(), 354, "DATA");
      } else {
        await writeAll(conn, mail);
        expect(await rd.read(), 250, "MAIL");
        for (const rcpt of rcpts) {
          await writeAll(conn, rcpt);
          expect(await rd.read(), 250, "RCPT");
        }
        await writeAll(conn, data);
        expect(await rd.read(), 354, "DATA");
      }
      await writeAll(conn, message);
      expect(await rd.read(), 250, "end of data");
      const t1 = performance.now();
      tally.latencies.push(t1 - t0);
      tally.acceptedAt.push(t1);
      tally.ok++;
      done++;
    }
    await writeAll(conn, encoder.encode("QUIT\r\n"));
    await rd.read().catch(() => undefined);
  } catch (e) {
    // The failing transaction and every one this session did not get to send count as failures.
    tally.failed += opts.messagesPerSession - done;
    const msg = (e as Error).message;
    if (tally.failures.length < 10 && !tally.failures.includes(msg)) tally.failures.push(msg);
  } finally {
    try {
      conn?.close();
    } catch { /* already closed */ }
  }
}

/** The middle value of `values` (the mean of the two middle ones for an even count); NaN when empty. */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The p-th percentile (nearest rank) of an ascending array; NaN when empty. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

/**
 * Runs `sessions` concurrent clients against one target; each opens `sessionsPerClient` SMTP sessions
 * one after another and sends `messagesPerSession` transactions on each.
 */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const message = buildMessage(opts.bodyBytes, opts.from, opts.to);
  const tally: SessionTally = {
    ok: 0,
    failed: 0,
    latencies: [],
    setups: [],
    acceptedAt: [],
    failures: [],
    pipelining: false,
  };
  const rounds = opts.sessionsPerClient ?? 1;
  const client = async () => {
    for (let i = 0; i < rounds; i++) await runSession(opts, message, tally);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: opts.sessions }, client));
  const elapsedMs = performance.now() - t0;
  const sorted = tally.latencies.sort((a, b) => a - b);
  const setups = tally.setups.sort((a, b) => a - b);
  return {
    ok: tally.ok,
    failed: tally.failed,
    failures: tally.failures,
    elapsedMs,
    msgsPerSec: tally.ok / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    pipelining: tally.pipelining,
    startedAt: t0,
    acceptedAt: tally.acceptedAt,
    sessions: setups.length,
    setupP50Ms: percentile(setups, 50),
    setupP99Ms: percentile(setups, 99),
  };
}

/** Result of a cross-check run with Postfix's smtp-source. */
export interface SmtpSourceResult {
  /** Messages sent (as asked; smtp-source aborts on errors). */
  messages: number;
  /** Wall-clock duration in milliseconds. */
  elapsedMs: number;
  /** Messages per second. */
  msgsPerSec: number;
  /** smtp-source exit code (0 on success). */
  code: number;
  /** Last lines of stderr when it failed. */
  stderr: string;
}

/**
 * Runs `smtp-source -d -s SESSIONS -l BYTES -m TOTAL` against a target and times it.
 * `-d` keeps each connection open for the next message, like {@link runLoad}.
 */
export async function runSmtpSource(
  target: { host: string; port: number },
  options: {
    sessions: number;
    messages: number;
    bodyBytes: number;
    from: string;
    to: string;
    timeoutMs?: number;
  },
): Promise<SmtpSourceResult> {
  const args = [
    "-d",
    "-s",
    String(options.sessions),
    "-l",
    String(options.bodyBytes),
    "-m",
    String(options.messages),
    "-f",
    options.from,
    "-t",
    options.to,
    "-M",
    "source.bench.test",
    `${target.host}:${target.port}`,
  ];
  const t0 = performance.now();
  const child = new Deno.Command("/usr/sbin/smtp-source", {
    args,
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
  }).spawn();
  const out = await child.output();
  const elapsedMs = performance.now() - t0;
  return {
    messages: options.messages,
    elapsedMs,
    msgsPerSec: options.messages / (elapsedMs / 1000),
    code: out.code,
    stderr: decoder.decode(out.stderr).trim().split("\n").slice(-3).join(" | "),
  };
}
