/** RFC 5322 header section: split off the body, unfold, keep order and raw names. */

/** One header field. */
export interface HeaderField {
  name: string;
  /** Unfolded value without the leading space */
  value: string;
}

const decoder = new TextDecoder();

/** Finds the offset where the body starts (after the blank line), or the content length if none. */
export function headerEnd(content: Uint8Array): number {
  // No header section at all: the body starts after the leading blank line.
  if (content[0] === 0x0a) return 1;
  if (content[0] === 0x0d && content[1] === 0x0a) return 2;
  for (let i = 0; i < content.length; i++) {
    if (content[i] !== 0x0a) continue;
    if (content[i + 1] === 0x0a) return i + 2;
    if (content[i + 1] === 0x0d && content[i + 2] === 0x0a) return i + 3;
  }
  return content.length;
}

/** Parses the header section of a message. Lines that are not fields end the section. */
export function parseHeaders(content: Uint8Array): HeaderField[] {
  const text = decoder.decode(content.subarray(0, Math.min(headerEnd(content), 1024 * 1024)));
  const fields: HeaderField[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line === "") break;
    if (/^[ \t]/.test(line) && fields.length) {
      fields[fields.length - 1].value += " " + line.trim();
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon).trimEnd())) break;
    fields.push({ name: line.slice(0, colon).trimEnd(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}
