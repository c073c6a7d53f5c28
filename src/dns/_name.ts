/** Domain name checks and normal form (RFC 1035 2.3.4 limits). Private to the dns room. */

import { DnsError } from "./dns_error.ts";
import { utf8Length } from "../core/utf8.ts";

/**
 * Lower-cases a name and drops the trailing dot; throws DnsError BADNAME (not temporary) when a label is
 * empty or over 63 octets, or the name is over 253 characters.
 */
export function normalizeName(name: string, qtype = ""): string {
  let n = name.toLowerCase();
  if (n.endsWith(".")) n = n.slice(0, -1);
  const bad = (why: string) =>
    new DnsError("BADNAME", `Cannot query "${name}": ${why}`, { qname: name, qtype });
  if (n === "") throw bad("empty name");
  if (utf8Length(n) > 253) throw bad("name too long");
  for (const label of n.split(".")) {
    if (label === "") throw bad("empty label");
    if (utf8Length(label) > 63) throw bad("label too long");
  }
  return n;
}
