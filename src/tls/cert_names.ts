/**
 * Reads the identifiers an X.509 certificate (RFC 5280) presents for RFC 6125 checks: subjectAltName
 * dNSName entries and subject commonName values. Trusts only that the DER came from a completed handshake;
 * a certificate that does not parse presents no names.
 */

import * as asn1js from "asn1js";
import * as pkijs from "pkijs";
import type { PresentedNames } from "./hostname.ts";

const OID_COMMON_NAME = "2.5.4.3";
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const GENERAL_NAME_DNS = 2;

/** The DNS SANs and CNs of a DER certificate (empty lists when it does not parse). */
export function presentedNames(der: Uint8Array): PresentedNames {
  const out: PresentedNames = { dns: [], cn: [] };
  let cert: pkijs.Certificate;
  try {
    const asn = asn1js.fromBER(der.slice().buffer);
    if (asn.offset === -1) return out;
    cert = new pkijs.Certificate({ schema: asn.result });
  } catch {
    return out;
  }
  for (const tv of cert.subject.typesAndValues) {
    if (tv.type === OID_COMMON_NAME) out.cn.push(String(tv.value.valueBlock.value));
  }
  for (const ext of cert.extensions ?? []) {
    if (ext.extnID !== OID_SUBJECT_ALT_NAME) continue;
    const alt = ext.parsedValue as pkijs.AltName | undefined;
    for (const g of alt?.altNames ?? []) {
      if (g.type === GENERAL_NAME_DNS && typeof g.value === "string") out.dns.push(g.value);
    }
  }
  return out;
}
