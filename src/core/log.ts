/**
 * The main log: Exim-style lines (`2026-11-22 03:14:09 1tE3Xz-0001Ab-Cd <= a@b H=(helo) [ip]:port ...`)
 * or JSON lines, to stdout or a file that SIGHUP reopens (for logrotate), written asynchronously from a
 * bounded queue so a slow output never blocks the event loop.
 */

import { utf8Length } from "./utf8.ts";

/** Where log lines go and in which form. */
export interface LogOptions {
  /** A file path; stdout when absent */
  file?: string;
  format: "exim" | "json";
}

/** Structured fields that come with a line (they form the JSON object in JSON mode). */
export type LogFields = Record<string, string | number | boolean | undefined | null | string[]>;

/** Anything that writes log lines. */
export interface Logger {
  /** Writes one line; `id` is the message id when the line is about a message. */
  write(text: string, fields?: LogFields & { id?: string }): void;
}

/** The last second formatted, and the Date.now() second it was for: a busy log formats each second once. */
let stampSecond = -1;
let stampText = "";

function timestamp(d: Date): string {
  const second = Math.floor(d.getTime() / 1000);
  if (second === stampSecond) return stampText;
  const p = (n: number) => String(n).padStart(2, "0");
  stampText = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${
    p(d.getMinutes())
  }:${p(d.getSeconds())}`;
  stampSecond = second;
  return stampText;
}

const encoder = new TextEncoder();

// C0 controls, DEL, and the C1 controls (U+0080–U+009F: a client's octets C2 9B decode to U+009B, the
// one-character CSI that terminals honouring C1 read as the start of an escape sequence).
// deno-lint-ignore no-control-regex
const NON_PRINTING = /[\x00-\x1f\x7f-\x9f]/g;
const ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` with every control character written out as Exim's `string_printing()` does (`\n`, `\r`, `\t`,
 * else `\xHH`): a line holds client text (HELO names, AUTH logins, commands, TLS server names), and a line
 * break in it must not start a line of its own that log readers would take for one of ours.
 */
export function printable(text: string): string {
  NON_PRINTING.lastIndex = 0;
  if (!NON_PRINTING.test(text)) return text;
  return text.replace(
    NON_PRINTING,
    (c) => ESCAPES[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/** Where MainLog's bytes go: Deno.stdout, a Deno.FsFile, or a stand-in in tests. */
export interface LogOutput {
  write(p: Uint8Array): Promise<number>;
}

/** How many octets of log lines may wait for a slow output before new lines are dropped (and counted). */
export const LOG_BUFFER_LIMIT = 4 * 1024 * 1024;

/**
 * The main log. `write()` never waits: lines are queued and written by one asynchronous writer, so a
 * stdout pipe or disk that backs up cannot stall sessions. While more than `maxBuffered` octets wait, new
 * lines are dropped and counted, and the count is logged once the output moves again. `flush()`/`close()`
 * write out everything queued, so a clean stop loses nothing.
 */
export class MainLog implements Logger {
  #opts: LogOptions;
  #file?: Deno.FsFile;
  #output?: LogOutput;
  #maxBuffered: number;
  /** Lines waiting to be written, with their octet counts in #buffered */
  #queue: string[] = [];
  #buffered = 0;
  #dropped = 0;
  /** Drops not yet reported in the log itself */
  #pendingDrops = 0;
  #writing?: Promise<void>;
  /** A drain is running and will see what is pushed (false from the moment it finds the queue empty) */
  #draining = false;

  /**
   * `output` replaces stdout or the file (tests); `maxBuffered` bounds the octets waiting to be written
   * (default LOG_BUFFER_LIMIT).
   */
  constructor(opts: LogOptions & { output?: LogOutput; maxBuffered?: number }) {
    this.#opts = opts;
    this.#output = opts.output;
    this.#maxBuffered = opts.maxBuffered ?? LOG_BUFFER_LIMIT;
    this.reopen();
  }

  /** Lines dropped so far because the output was too slow. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Opens (again) the log file; a no-op for stdout. Lines still queued go to the new file. */
  reopen(): void {
    if (!this.#opts.file || this.#output) return;
    const next = Deno.openSync(this.#opts.file, { append: true, create: true });
    const old = this.#file;
    this.#file = next;
    // A write in flight still uses the old file: close it once that write is done.
    if (old) (this.#writing ?? Promise.resolve()).finally(() => old.close());
  }

  write(text: string, fields: LogFields & { id?: string } = {}): void {
    const line = this.#format(text, fields);
    const size = utf8Length(line);
    // The count of lines lost goes in where they were lost, as soon as there is room for it.
    if (this.#pendingDrops > 0) {
      const notice = this.#dropNotice();
      const noticeSize = utf8Length(notice);
      if (this.#buffered + noticeSize + size <= this.#maxBuffered) {
        this.#pendingDrops = 0;
        this.#push(notice, noticeSize);
      }
    }
    if (this.#buffered + size > this.#maxBuffered) {
      this.#dropped++;
      this.#pendingDrops++;
      return;
    }
    this.#push(line, size);
  }

  /** One line of the log, with its newline. */
  #format(text: string, fields: LogFields & { id?: string }): string {
    const now = new Date();
    let line: string;
    if (this.#opts.format === "json") {
      const obj: Record<string, unknown> = { time: now.toISOString(), msg: text };
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) obj[k] = v;
      line = JSON.stringify(obj);
    } else {
      line = `${timestamp(now)} ${fields.id ? fields.id + " " : ""}${printable(text)}`;
    }
    return line + "\n";
  }

  /** The line counting the drops not yet reported. */
  #dropNotice(): string {
    const n = this.#pendingDrops;
    return this.#format(`log output too slow: ${n} line(s) dropped`, { event: "log_dropped", dropped: n });
  }

  #push(line: string, size = utf8Length(line)): void {
    this.#queue.push(line);
    this.#buffered += size;
    if (this.#draining) return;
    // Started afresh whenever the last drain has seen an empty queue, even if its promise has not settled
    // yet: a line pushed in between would otherwise wait for the next line to be written at all.
    this.#draining = true;
    const run: Promise<void> = this.#drain().finally(() => {
      if (this.#writing === run) this.#writing = undefined;
    });
    this.#writing = run;
  }

  #target(): LogOutput {
    return this.#output ?? this.#file ?? Deno.stdout;
  }

  async #drain(): Promise<void> {
    try {
      for (;;) {
        // Nothing else queued: the count of dropped lines always fits now.
        if (this.#queue.length === 0 && this.#pendingDrops > 0) {
          const notice = this.#dropNotice();
          this.#pendingDrops = 0;
          this.#push(notice);
        }
        if (this.#queue.length === 0) return;
        // Encoded once for the whole batch.
        const bytes = encoder.encode(this.#queue.join(""));
        this.#queue = [];
        try {
          const out = this.#target();
          for (let at = 0; at < bytes.length;) at += await out.write(bytes.subarray(at));
        } catch {
          // A log that cannot be written must not stop mail.
        }
        this.#buffered -= bytes.length;
      }
    } finally {
      // In the same step as the last look at the queue (a return runs this at once), not when the promise
      // settles: from here on a new line starts a new drain.
      this.#draining = false;
    }
  }

  /** Resolves once every line written so far is out (the file written, the pipe accepted it). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** Writes out what is queued, then closes the file. */
  async close(): Promise<void> {
    await this.flush();
    this.#file?.close();
    this.#file = undefined;
  }
}

/** A logger that keeps lines in memory (tests). */
export class MemoryLog implements Logger {
  readonly lines: { text: string; fields: LogFields & { id?: string } }[] = [];
  write(text: string, fields: LogFields & { id?: string } = {}): void {
    this.lines.push({ text, fields });
  }
  /** True when some line contains `needle`. */
  has(needle: string | RegExp): boolean {
    return this.lines.some((l) => typeof needle === "string" ? l.text.includes(needle) : needle.test(l.text));
  }
}
