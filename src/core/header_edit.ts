/**
 * Edits of a message's header section (RFC 5322 2.2): fields added at the top, removed, or replaced, applied
 * to the raw octets so every field not touched stays byte for byte as received (DKIM depends on it).
 */

import { headerEnd } from "./headers.ts";

/** One raw header field: its name and where it lies in the message, folded lines included. */
export interface RawField {
  name: string;
  start: number;
  end: number;
}

const decoder = new TextDecoder();
import { prependInPlace } from "./headroom.ts";

const encoder = new TextEncoder();
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

/** The header fields of `content` with their octet ranges, in order. */
export function rawFields(content: Uint8Array): RawField[] {
  const end = headerEnd(content);
  const fields: RawField[] = [];
  let pos = 0;
  while (pos < end) {
    let eol = content.indexOf(0x0a, pos);
    if (eol < 0 || eol >= end) eol = end - 1;
    const lineEnd = eol + 1;
    const first = content[pos];
    if (first === 0x0d || first === 0x0a) break;
    if ((first === 0x20 || first === 0x09) && fields.length) {
      fields[fields.length - 1].end = lineEnd;
    } else {
      const colon = content.indexOf(0x3a, pos);
      if (colon < 0 || colon > eol) break;
      const name = decoder.decode(content.subarray(pos, colon)).trimEnd();
      if (!FIELD_NAME.test(name)) break;
      fields.push({ name, start: pos, end: lineEnd });
    }
    pos = lineEnd;
  }
  return fields;
}

/** Checks a field name and value given by policy; throws TypeError for what would break the message. */
export function checkField(name: string, value: string): void {
  if (!FIELD_NAME.test(name)) throw new TypeError(`Invalid header field name ${JSON.stringify(name)}`);
  // Folding (CRLF followed by white space) is allowed; a bare line break would end the field early.
  if (/\r(?!\n[ \t])|(?<!\r)\n|\r\n(?![ \t])/.test(value)) {
    throw new TypeError(
      `Invalid header field ${JSON.stringify(name)}: a line break must be followed by white space`,
    );
  }
}

/** Chooses which occurrences of a field to remove: by value (unfolded, trimmed) and position (0 = first). */
export type FieldMatcher = (value: string, index: number) => boolean;

/** Header edits collected during a stage and applied once when the message is stored. */
export class HeaderEdits {
  #added: string[] = [];
  #removals: { name: string; match?: FieldMatcher }[] = [];

  /** Adds a field at the top (in call order, after the trace fields Ferry adds). */
  add(name: string, value: string): void {
    checkField(name, value);
    this.#added.push(`${name}: ${value}\r\n`);
  }

  /** Removes every field called `name` (case-insensitive), or those `match` picks. */
  remove(name: string, match?: FieldMatcher): void {
    this.#removals.push({ name: name.toLowerCase(), match });
  }

  /** Removes every field called `name` and adds one with `value` at the top. */
  replace(name: string, value: string): void {
    checkField(name, value);
    this.remove(name);
    this.add(name, value);
  }

  /** True when nothing is to change. */
  get empty(): boolean {
    return this.#added.length === 0 && this.#removals.length === 0;
  }

  /** The message with the edits applied: `prefix` (trace fields) first, then added fields, then the rest. */
  apply(content: Uint8Array, prefix = ""): Uint8Array {
    const top = encoder.encode(prefix + this.#added.join(""));
    const drop: RawField[] = [];
    if (this.#removals.length) {
      const counts = new Map<string, number>();
      for (const f of rawFields(content)) {
        const key = f.name.toLowerCase();
        const index = counts.get(key) ?? 0;
        counts.set(key, index + 1);
        const removals = this.#removals.filter((r) => r.name === key);
        if (removals.length === 0) continue;
        const value = decoder.decode(content.subarray(f.start, f.end)).slice(f.name.length).replace(
          /^\s*:/,
          "",
        ).replace(/\r?\n[ \t]/g, " ").trim();
        if (removals.some((r) => !r.match || r.match(value, index))) drop.push(f);
      }
    }
    // Nothing removed: the prefix goes into the room in front of the content when it has some (no copy).
    if (drop.length === 0) {
      const inPlace = prependInPlace(content, top);
      if (inPlace !== undefined) return inPlace;
    }
    const kept = content.length - drop.reduce((n, f) => n + f.end - f.start, 0);
    const out = new Uint8Array(top.length + kept);
    out.set(top);
    let at = top.length;
    let from = 0;
    for (const f of drop) {
      out.set(content.subarray(from, f.start), at);
      at += f.start - from;
      from = f.end;
    }
    out.set(content.subarray(from), at);
    return out;
  }
}
