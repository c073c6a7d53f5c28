/**
 * The main log: Exim-style lines (`2026-11-22 03:14:09 1tE3Xz-0001Ab-Cd <= a@b H=(helo) [ip]:port ...`)
 * or JSON lines, to stdout or a file that SIGHUP reopens (for logrotate).
 */

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

function timestamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${
    p(d.getMinutes())
  }:${p(d.getSeconds())}`;
}

const encoder = new TextEncoder();

/** The main log. Writes are synchronous appends, so a line is never lost to a crash after it was written. */
export class MainLog implements Logger {
  #opts: LogOptions;
  #file?: Deno.FsFile;

  constructor(opts: LogOptions) {
    this.#opts = opts;
    this.reopen();
  }

  /** Opens (again) the log file; a no-op for stdout. */
  reopen(): void {
    if (!this.#opts.file) return;
    const next = Deno.openSync(this.#opts.file, { append: true, create: true });
    const old = this.#file;
    this.#file = next;
    old?.close();
  }

  write(text: string, fields: LogFields & { id?: string } = {}): void {
    const now = new Date();
    let line: string;
    if (this.#opts.format === "json") {
      const obj: Record<string, unknown> = { time: now.toISOString(), msg: text };
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) obj[k] = v;
      line = JSON.stringify(obj);
    } else {
      line = `${timestamp(now)} ${fields.id ? fields.id + " " : ""}${text}`;
    }
    const bytes = encoder.encode(line + "\n");
    try {
      if (this.#file) this.#file.writeSync(bytes);
      else Deno.stdout.writeSync(bytes);
    } catch {
      // A log that cannot be written must not stop mail.
    }
  }

  /** Closes the file. */
  close(): void {
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
