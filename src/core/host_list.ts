/**
 * Host lists in Exim's sense: items matched in order, first match decides. An item is `"*"`, a CIDR or
 * address, a host or domain name, `*.suffix`, or any of these after `!` (a match then means "not in list").
 * A function may stand for the whole list (that is how a Redis lookup becomes a host list).
 * SECURITY: a function list runs under a deadline with an AbortSignal; a hung or failing function is a
 * HostListError naming the list, never a silent "no match" — callers turn it into a 4xx or a deferral.
 */

import { type Cidr, cidrContains, parseCidr } from "./ip.ts";
import { errorMessage } from "./error_message.ts";

/** What a host list is matched against: an address, a name, or both. */
export interface HostListSubject {
  /** An IP address (for host lists) */
  ip?: string;
  /** A host name or mail domain */
  name?: string;
}

/** What a function host list receives besides the subject. */
export interface HostListCallOptions {
  /** Aborted when the list's deadline passes or the caller gives up: hand it to lookups and fetches */
  signal: AbortSignal;
}

/** The function form of a host list. */
export type HostListFn = (subject: HostListSubject, opts: HostListCallOptions) => boolean | Promise<boolean>;

/** How a compiled host list names itself in errors and bounds its function form. */
export interface HostListOptions {
  /** The config path of the list, for log lines (e.g. `"relay.clients"`) */
  name?: string;
  /** Deadline for a function list (milliseconds; default 30 s, the default `limits.policyTimeout`) */
  timeoutMs?: number;
}

/** A function host list failed or did not answer within its deadline. */
export class HostListError extends Error {
  /** The list's config path */
  readonly list: string;
  /** True when the deadline passed (or the caller aborted) rather than the function throwing */
  readonly timedOut: boolean;
  constructor(list: string, message: string, options: { cause?: unknown; timedOut: boolean }) {
    super(message, { cause: options.cause });
    this.name = "HostListError";
    this.list = list;
    this.timedOut = options.timedOut;
  }
}

/** A host list as written in config. */
export type HostListSpec = string | readonly string[] | HostListFn;

type Item =
  | { kind: "any"; negate: boolean }
  | { kind: "cidr"; negate: boolean; net: Cidr }
  | { kind: "name"; negate: boolean; name: string }
  | { kind: "suffix"; negate: boolean; suffix: string };

/** Lowercases a name and strips one trailing dot. */
export function normalizeName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith(".") ? n.slice(0, -1) : n;
}

/** Parses one item; returns an error message for an item that cannot be understood. */
export function parseHostListItem(text: string): Item | string {
  let s = text.trim();
  let negate = false;
  if (s.startsWith("!")) {
    negate = true;
    s = s.slice(1).trim();
  }
  if (s === "") return `empty host list item "${text}"`;
  if (s === "*") return { kind: "any", negate };
  if (/^[0-9.]+(\/\d+)?$/.test(s) || s.includes(":")) {
    const net = parseCidr(s);
    if (!net) return `invalid address or network "${s}"`;
    return { kind: "cidr", negate, net };
  }
  if (s.startsWith("*.")) {
    const suffix = normalizeName(s.slice(1));
    if (!/^(\.[\p{L}\p{N}_-]+)+$/u.test(suffix)) return `invalid domain suffix "${s}"`;
    return { kind: "suffix", negate, suffix };
  }
  const name = normalizeName(s);
  // Letters of any script (IDN U-labels), digits, "_" and "-": a stray "*" or "@" is a mistake, not a name.
  if (!/^[\p{L}\p{N}_-]+(\.[\p{L}\p{N}_-]+)*$/u.test(name)) {
    return `invalid host name "${s}"`;
  }
  return { kind: "name", negate, name };
}

/** A compiled host list. */
export class HostList {
  readonly #items: Item[];
  readonly #fn?: HostListFn;
  readonly #name: string;
  readonly #timeoutMs: number;

  constructor(spec: HostListSpec, opts: HostListOptions = {}) {
    this.#name = opts.name ?? "host list";
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    if (typeof spec === "function") {
      this.#items = [];
      this.#fn = spec;
      return;
    }
    const texts = typeof spec === "string" ? spec.split(/[\s,]+/).filter(Boolean) : [...spec];
    this.#items = texts.map((t) => {
      const item = parseHostListItem(t);
      if (typeof item === "string") throw new TypeError(item);
      return item;
    });
  }

  /** Validates a spec without building it; returns the problems found. */
  static problems(spec: HostListSpec): string[] {
    if (typeof spec === "function") return [];
    const texts = typeof spec === "string" ? spec.split(/[\s,]+/).filter(Boolean) : [...spec];
    return texts.map(parseHostListItem).filter((x): x is string => typeof x === "string");
  }

  /** True when the list is a fixed list with no items (matches nothing). */
  get empty(): boolean {
    return !this.#fn && this.#items.length === 0;
  }

  /** Matches synchronously; a function-form list is not allowed here. */
  matchSync(subject: HostListSubject): boolean {
    if (this.#fn) throw new TypeError("A function host list needs match()");
    return this.#matchItems(subject);
  }

  /** The list's config path (for log lines). */
  get name(): string {
    return this.#name;
  }

  /**
   * Matches a subject: first matching item decides; no match means not in the list. A function list gets an
   * AbortSignal that fires at the deadline or when `opts.signal` does; throws HostListError then, or when
   * the function throws.
   */
  async match(subject: HostListSubject, opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    if (!this.#fn) return this.#matchItems(subject);
    const fn = this.#fn;
    const own = new AbortController();
    const signal = opts.signal ? AbortSignal.any([own.signal, opts.signal]) : own.signal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const gaveUp = new Promise<never>((_, reject) => {
      onAbort = () => {
        const why = own.signal.aborted ? `did not answer within ${this.#timeoutMs} ms` : "was aborted";
        reject(new HostListError(this.#name, `${this.#name}: host list function ${why}`, { timedOut: true }));
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      timer = setTimeout(() => own.abort(), this.#timeoutMs);
    });
    try {
      return Boolean(await Promise.race([Promise.resolve().then(() => fn(subject, { signal })), gaveUp]));
    } catch (err) {
      if (err instanceof HostListError) throw err;
      throw new HostListError(this.#name, `${this.#name}: host list function failed: ${errorMessage(err)}`, {
        cause: err,
        timedOut: false,
      });
    } finally {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }

  #matchItems(subject: HostListSubject): boolean {
    const name = subject.name ? normalizeName(subject.name) : undefined;
    for (const item of this.#items) {
      let hit = false;
      switch (item.kind) {
        case "any":
          hit = true;
          break;
        case "cidr":
          hit = subject.ip !== undefined && cidrContains(item.net, subject.ip);
          break;
        case "name":
          hit = name === item.name;
          break;
        case "suffix":
          hit = name !== undefined && name.endsWith(item.suffix) && name.length > item.suffix.length;
          break;
      }
      if (hit) return !item.negate;
    }
    return false;
  }
}
