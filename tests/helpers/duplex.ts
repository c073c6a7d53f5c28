/**
 * An in-memory duplex byte stream pair for protocol tests: what one end writes the other reads.
 * Reads queue in call order like a socket's (an abandoned read still takes the next bytes), close gives EOF.
 */

import type { ByteStream } from "../../src/core/stream.ts";

/** One direction of a pair. */
class Pipe {
  #chunks: Uint8Array[] = [];
  #readers: { p: Uint8Array; resolve: (n: number | null) => void }[] = [];
  #ended = false;

  get ended(): boolean {
    return this.#ended;
  }

  push(data: Uint8Array): void {
    if (this.#ended) throw new Error("Write on a closed stream");
    if (data.length) this.#chunks.push(data.slice());
    this.#serve();
  }

  end(): void {
    this.#ended = true;
    this.#serve();
  }

  read(p: Uint8Array): Promise<number | null> {
    return new Promise((resolve) => {
      this.#readers.push({ p, resolve });
      this.#serve();
    });
  }

  #serve(): void {
    while (this.#readers.length && (this.#chunks.length || this.#ended)) {
      const reader = this.#readers.shift()!;
      const chunk = this.#chunks.shift();
      if (!chunk) {
        reader.resolve(null);
        continue;
      }
      const n = Math.min(chunk.length, reader.p.length);
      reader.p.set(chunk.subarray(0, n));
      if (n < chunk.length) this.#chunks.unshift(chunk.subarray(n));
      reader.resolve(n);
    }
  }
}

/** One end of an in-memory connection. */
export class MemoryStream implements ByteStream {
  #in: Pipe;
  #out: Pipe;
  #closed = false;
  /** Octets written by this end */
  written = 0;

  constructor(incoming: Pipe, outgoing: Pipe) {
    this.#in = incoming;
    this.#out = outgoing;
  }

  /** True once this end was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.resolve(null);
    return this.#in.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed || this.#out.ended) return Promise.reject(new Error("Broken pipe"));
    this.#out.push(p);
    this.written += p.length;
    return Promise.resolve(p.length);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#out.end();
    this.#in.end();
  }
}

/** A connected pair: `[a, b]`, what `a` writes `b` reads and the other way round. */
export function duplexPair(): [MemoryStream, MemoryStream] {
  const ab = new Pipe();
  const ba = new Pipe();
  return [new MemoryStream(ba, ab), new MemoryStream(ab, ba)];
}
