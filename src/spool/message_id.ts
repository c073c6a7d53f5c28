/**
 * Exim-style message ids in the Exim 4.97+ form `tttttt-ppppppppppp-ssss`: base62 seconds since the epoch
 * (6 chars), base62 process id (11 chars), base62 sub-second slot (4 chars, microsecond resolution).
 * Trusts the system clock only to move forward most of the time: a generator never reuses a value it handed
 * out, even when the clock steps back, and the pid keeps processes sharing one spool apart.
 */

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_CHARS = 6;
const PID_CHARS = 11;
const FRACTION_CHARS = 4;
/** Sub-second slots a second holds: one a microsecond; 62^4 would allow 14,776,336. */
const SLOTS_PER_SECOND = 1_000_000;

/** Matches an id made by {@link newMessageId} (and nothing that could escape a directory). */
export const MESSAGE_ID_PATTERN = /^[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}$/;

/** Encodes a non-negative integer in base62, left-padded with "0" to `width` characters. */
export function toBase62(value: number, width: number): string {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot encode "${value}" in base62`);
  }
  let out = "";
  let rest = value;
  do {
    out = BASE62[rest % 62] + out;
    rest = Math.floor(rest / 62);
  } while (rest > 0);
  if (out.length > width) throw new RangeError(`Value "${value}" does not fit ${width} base62 characters`);
  return out.padStart(width, "0");
}

/** Decodes a base62 string (the alphabet of {@link toBase62}). */
export function fromBase62(text: string): number {
  let value = 0;
  for (const ch of text) {
    const digit = BASE62.indexOf(ch);
    if (digit < 0) throw new RangeError(`Invalid base62 character "${ch}"`);
    value = value * 62 + digit;
  }
  return value;
}

/** Where ids get their time and pid from; tests replace the clock. */
export interface MessageIdSource {
  /** Current time in microseconds since the epoch */
  nowMicros(): number;
  /** The process id to embed */
  pid: number;
}

/** Wall clock with microsecond resolution (performance.now() offset by the time origin). */
function systemMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** Hands out strictly increasing (seconds, slot) pairs for one process, so its ids never repeat. */
export class MessageIdGenerator {
  #source: MessageIdSource;
  #lastSecond = -1;
  #lastSlot = -1;

  constructor(source?: Partial<MessageIdSource>) {
    this.#source = { nowMicros: source?.nowMicros ?? systemMicros, pid: source?.pid ?? Deno.pid };
  }

  /** The next id; strictly greater (as a time/slot pair) than every earlier one from this generator. */
  next(): string {
    const micros = this.#source.nowMicros();
    let second = Math.floor(micros / 1_000_000);
    let slot = micros % SLOTS_PER_SECOND;
    if (second < this.#lastSecond || (second === this.#lastSecond && slot <= this.#lastSlot)) {
      // The clock stood still or stepped back: keep counting from the last value handed out.
      second = this.#lastSecond;
      slot = this.#lastSlot + 1;
      if (slot >= SLOTS_PER_SECOND) {
        second += 1;
        slot = 0;
      }
    }
    this.#lastSecond = second;
    this.#lastSlot = slot;
    return `${toBase62(second, TIME_CHARS)}-${toBase62(this.#source.pid, PID_CHARS)}-${
      toBase62(slot, FRACTION_CHARS)
    }`;
  }
}

const processGenerator = new MessageIdGenerator();

/** A new message id, unique within this process and, through the pid, across processes sharing a spool. */
export function newMessageId(): string {
  return processGenerator.next();
}

/** The parts of a message id: seconds since the epoch, process id, sub-second slot. */
export function parseMessageId(id: string): { seconds: number; pid: number; slot: number } | undefined {
  if (!MESSAGE_ID_PATTERN.test(id)) return undefined;
  const [t, p, s] = id.split("-");
  return { seconds: fromBase62(t), pid: fromBase62(p), slot: fromBase62(s) };
}
