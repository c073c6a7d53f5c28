/**
 * Exim-style message ids in the Exim 4.97 form `tttttt-iiiiiiiiiii-ssss`: base62 seconds since the epoch
 * (6 chars), a base62 instance number (11 chars), base62 sub-second slot (4 chars, microsecond resolution).
 * Exim puts its process id in the middle; Ferry puts a 53-bit random number drawn once per generator
 * (process), because process ids are not distinct where it runs: every container's Ferry is PID 1, and a
 * restart after the clock stepped back would meet the ids of the previous run with the same pid.
 * Trusts the system clock only to move forward most of the time: a generator never reuses a value it handed
 * out, even when the clock steps back; the instance number keeps processes (and runs) apart.
 */

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TIME_CHARS = 6;
const INSTANCE_CHARS = 11;
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

/** Where ids get their time and instance number from; tests replace the clock. */
export interface MessageIdSource {
  /** Current time in microseconds since the epoch */
  nowMicros(): number;
  /** The number that sets this generator's ids apart from every other generator's (0 ≤ n < 2^53) */
  instance: number;
}

/** A random safe integer (53 bits) from the system's CSPRNG. */
function randomInstance(): number {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2));
  return (hi >>> 11) * 2 ** 32 + lo;
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
    this.#source = {
      nowMicros: source?.nowMicros ?? systemMicros,
      instance: source?.instance ?? randomInstance(),
    };
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
    return `${toBase62(second, TIME_CHARS)}-${toBase62(this.#source.instance, INSTANCE_CHARS)}-${
      toBase62(slot, FRACTION_CHARS)
    }`;
  }
}

const processGenerator = new MessageIdGenerator();

/** A new message id, unique within this process and, through the instance number, across processes and runs. */
export function newMessageId(): string {
  return processGenerator.next();
}

/** The parts of a message id: seconds since the epoch, instance number, sub-second slot. */
export function parseMessageId(id: string): { seconds: number; instance: number; slot: number } | undefined {
  if (!MESSAGE_ID_PATTERN.test(id)) return undefined;
  const [t, i, s] = id.split("-");
  return { seconds: fromBase62(t), instance: fromBase62(i), slot: fromBase62(s) };
}
