/** UTF-8 lengths of strings, without encoding them. */

/**
 * The number of octets `text` takes in UTF-8, as TextEncoder would write it (a lone surrogate becomes
 * U+FFFD, three octets).
 */
export function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) {
      n += 1;
      continue;
    }
    // Three octets for one UTF-16 unit; four for a surrogate pair's two.
    n += 2;
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
  }
  return n;
}
