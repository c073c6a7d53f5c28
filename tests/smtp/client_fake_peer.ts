/** Test helpers for the SMTP client: an in-memory ByteStream pair and a scripted fake server. */

import type { ByteStream } from "../../src/core/stream.ts";

class Pipe {
  chunks: Uint8Array[] = [];
  closed = false;
  waiter: (() => void) | undefined;
  push(p: Uint8Array) {
    this.chunks.push(p.slice());
    this.wake();
  }
  wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

class End implements ByteStream {
  constructor(readonly inbound: Pipe, readonly outbound: Pipe) {}
  async read(p: Uint8Array): Promise<number | null> {
    while (this.inbound.chunks.length === 0) {
      if (this.inbound.closed) return null;
      await new Promise<void>((r) => (this.inbound.waiter = r));
    }
    const c = this.inbound.chunks[0];
    const n = Math.min(c.length, p.length);
    p.set(c.subarray(0, n));
    if (n === c.length) this.inbound.chunks.shift();
    else this.inbound.chunks[0] = c.subarray(n);
    return n;
  }
  write(p: Uint8Array): Promise<number> {
    if (this.outbound.closed) return Promise.reject(new Error("Broken pipe"));
    this.outbound.push(p);
    return Promise.resolve(p.length);
  }
  close(): void {
    this.inbound.closed = true;
    this.outbound.closed = true;
    this.inbound.wake();
    this.outbound.wake();
  }
}

/** Two connected in-memory streams: what one writes, the other reads. */
export function streamPair(): [ByteStream, ByteStream] {
  const a = new Pipe();
  const b = new Pipe();
  return [new End(a, b), new End(b, a)];
}

const dec = new TextDecoder();
const enc = new TextEncoder();

/** The server side of a scripted conversation. */
export class FakePeer {
  #stream: ByteStream;
  #buf = new Uint8Array(0);
  /** Every command line read, without CRLF. */
  readonly lines: string[] = [];

  constructor(stream: ByteStream) {
    this.#stream = stream;
  }

  async #fill(): Promise<boolean> {
    const p = new Uint8Array(4096);
    const n = await this.#stream.read(p);
    if (n === null) return false;
    const j = new Uint8Array(this.#buf.length + n);
    j.set(this.#buf);
    j.set(p.subarray(0, n), this.#buf.length);
    this.#buf = j;
    return true;
  }

  /** Sends raw text (add CRLF yourself, or use `reply`). */
  async send(text: string): Promise<void> {
    await this.#stream.write(enc.encode(text));
  }

  /** Sends lines as one write, each ended by CRLF. */
  async reply(...lines: string[]): Promise<void> {
    await this.send(lines.map((l) => l + "\r\n").join(""));
  }

  /** Reads one line without CRLF; undefined at end of stream. */
  async line(): Promise<string | undefined> {
    for (;;) {
      const i = this.#buf.indexOf(0x0a);
      if (i >= 0) {
        const l = dec.decode(this.#buf.subarray(0, i)).replace(/\r$/, "");
        this.#buf = this.#buf.slice(i + 1);
        this.lines.push(l);
        return l;
      }
      if (!(await this.#fill())) return undefined;
    }
  }

  /** Reads exactly n bytes. */
  async bytes(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) if (!(await this.#fill())) throw new Error("EOF in bytes()");
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  /** Reads DATA content up to and including CRLF.CRLF; returns it raw (still dot-stuffed, without the terminator). */
  async dataRaw(): Promise<string> {
    let text = "";
    for (;;) {
      const l = await this.line();
      if (l === undefined) throw new Error("EOF in data");
      if (l === ".") return text;
      text += l + "\r\n";
    }
  }

  /** Reads a greeting-EHLO exchange: sends 220, expects EHLO, answers with the extensions given. */
  async hello(extensions: string[]): Promise<void> {
    await this.reply("220 fake ESMTP");
    const l = await this.line();
    if (!l?.startsWith("EHLO ")) throw new Error(`expected EHLO, got ${l}`);
    await this.reply(...["fake", ...extensions].map((e, i, a) => `250${i === a.length - 1 ? " " : "-"}${e}`));
  }

  /**
   * True when the client closes the stream without sending anything more. Waits for the close (the client's
   * positive signal that it is done), not for a quiet time.
   */
  async nothingUntilClose(): Promise<boolean> {
    if (this.#buf.length) return false;
    return !(await this.#fill());
  }

  /**
   * True when nothing more arrives before the stream closes or `ms` pass. Only for a client that is
   * waiting for a reply (nothing else would tell that it sent nothing early); at the end use nothingUntilClose().
   */
  async quietFor(ms: number): Promise<boolean> {
    if (this.#buf.length) return false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const t = new Promise<"t">((r) => (timer = setTimeout(() => r("t"), ms)));
    const got = await Promise.race([this.#fill().then((ok) => (ok ? "data" : "eof")), t]);
    clearTimeout(timer);
    return got !== "data";
  }

  close(): void {
    this.#stream.close();
  }
}
