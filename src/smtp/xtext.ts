/** RFC 3461 section 4 xtext: the encoding of ORCPT addresses and ENVID values in DSN parameters. */

/** Decodes xtext; returns undefined when it is not valid xtext (bad `+XX`, or characters outside 33..126, or `=`). */
export function decodeXtext(text: string): string | undefined {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2b) {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return undefined;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (c >= 33 && c <= 126 && c !== 0x3d) {
      bytes.push(c);
    } else {
      return undefined;
    }
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
  } catch {
    return undefined;
  }
}

/** Encodes a string as xtext: `+`, `=`, controls, space and non-ASCII octets become `+XX`. */
export function encodeXtext(value: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(value)) {
    out += b >= 33 && b <= 126 && b !== 0x2b && b !== 0x3d
      ? String.fromCharCode(b)
      : "+" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}
