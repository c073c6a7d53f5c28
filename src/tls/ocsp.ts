/**
 * OCSP responses and requests (RFC 6960; lightweight profile RFC 5019; AIA from RFC 5280 4.2.2.1).
 * Trusts only the issuer certificate it is given: a response counts when the issuer signed it, or a
 * delegated responder certificate that the issuer signed, marked id-kp-OCSPSigning, valid for the whole
 * thisUpdate..nextUpdate span. Hashes by node:crypto (sync), signatures by WebCrypto through pkijs.
 */
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";
import { createHash } from "node:crypto";

/** The verdict on one OCSP response for one certificate. */
export interface OcspCheck {
  /** True only for an authentic, current response saying "good": the one thing worth stapling */
  ok: boolean;
  /** The certificate status the response states, or "invalid" when the response cannot be trusted */
  status: "good" | "revoked" | "unknown" | "invalid";
  /** Why it is not ok (for the log) */
  reason?: string;
  thisUpdate?: Date;
  nextUpdate?: Date;
  /** End of validity of the certificate that signed the response (issuer or delegated responder) */
  signerNotAfter?: Date;
}

/** Clock skew tolerated for a thisUpdate in the future. */
export const OCSP_CLOCK_SKEW_MS = 5 * 60_000;

const ID_PKIX_OCSP_BASIC = "1.3.6.1.5.5.7.48.1.1";
const ID_AD_OCSP = "1.3.6.1.5.5.7.48.1";
const ID_PE_AUTHORITY_INFO_ACCESS = "1.3.6.1.5.5.7.1.1";
const ID_CE_EXT_KEY_USAGE = "2.5.29.37";
const ID_KP_OCSP_SIGNING = "1.3.6.1.5.5.7.3.9";
const SHA1_OID = "1.3.14.3.2.26";

/** CertID hash algorithms by OID, as node:crypto names them. */
const HASHES: Record<string, string> = {
  [SHA1_OID]: "sha1",
  "2.16.840.1.101.3.4.2.1": "sha256",
  "2.16.840.1.101.3.4.2.2": "sha384",
  "2.16.840.1.101.3.4.2.3": "sha512",
};

const RESPONSE_STATUS = [
  "successful",
  "malformedRequest",
  "internalError",
  "tryLater",
  "",
  "sigRequired",
  "unauthorized",
];

function hash(alg: string, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash(alg).update(data).digest());
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function parseCert(der: Uint8Array, what: string): pkijs.Certificate {
  try {
    return pkijs.Certificate.fromBER(der as Uint8Array<ArrayBuffer>);
  } catch (e) {
    throw new Error(`The ${what} certificate does not parse: ${(e as Error).message}`);
  }
}

/** The raw subjectPublicKey bits of a certificate (what issuerKeyHash and responder byKey hash). */
function keyBits(cert: pkijs.Certificate): Uint8Array {
  return cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView;
}

/** DER of the issuer certificate's subject, hashed into issuerNameHash. */
function subjectDer(cert: pkijs.Certificate): Uint8Array {
  return new Uint8Array(cert.subject.toSchema().toBER(false));
}

/** Returns the http URL of the certificate's OCSP responder (AIA, id-ad-ocsp), if it names one. */
export function ocspUrlOf(leafDer: Uint8Array): string | undefined {
  const leaf = parseCert(leafDer, "leaf");
  const aia = leaf.extensions?.find((e) => e.extnID === ID_PE_AUTHORITY_INFO_ACCESS);
  const info = aia?.parsedValue as pkijs.InfoAccess | undefined;
  for (const d of info?.accessDescriptions ?? []) {
    // GeneralName type 6 is uniformResourceIdentifier
    if (d.accessMethod !== ID_AD_OCSP || d.accessLocation.type !== 6) continue;
    const url = String(d.accessLocation.value);
    if (/^http:\/\//i.test(url)) return url;
  }
  return undefined;
}

/** Builds a DER OCSPRequest for the leaf (one SHA-1 CertID, no nonce, unsigned: RFC 5019 2.1). */
export function buildOcspRequest(leafDer: Uint8Array, issuerDer: Uint8Array): Uint8Array {
  const leaf = parseCert(leafDer, "leaf");
  const issuer = parseCert(issuerDer, "issuer");
  const certId = new pkijs.CertID({
    hashAlgorithm: new pkijs.AlgorithmIdentifier({
      algorithmId: SHA1_OID,
      algorithmParams: new asn1js.Null(),
    }),
    issuerNameHash: new asn1js.OctetString({ valueHex: hash("sha1", subjectDer(issuer)) }),
    issuerKeyHash: new asn1js.OctetString({ valueHex: hash("sha1", keyBits(issuer)) }),
    serialNumber: leaf.serialNumber,
  });
  const req = new pkijs.OCSPRequest();
  req.tbsRequest.requestList.push(new pkijs.Request({ reqCert: certId }));
  return new Uint8Array(req.toSchema(true).toBER(false));
}

/** Does this SingleResponse's CertID name the leaf, computed with the CertID's own hash algorithm? */
function certIdMatches(
  id: pkijs.CertID,
  leaf: pkijs.Certificate,
  issuer: pkijs.Certificate,
): boolean {
  const alg = HASHES[id.hashAlgorithm.algorithmId];
  if (!alg) return false;
  return sameBytes(id.issuerNameHash.valueBlock.valueHexView, hash(alg, subjectDer(issuer))) &&
    sameBytes(id.issuerKeyHash.valueBlock.valueHexView, hash(alg, keyBits(issuer))) &&
    id.serialNumber.isEqual(leaf.serialNumber);
}

/** Does the ResponderID (byName or byKey) name this certificate? */
function isResponder(rid: unknown, cert: pkijs.Certificate): boolean {
  if (rid instanceof pkijs.RelativeDistinguishedNames) return cert.subject.isEqual(rid);
  if (rid instanceof asn1js.OctetString) {
    return sameBytes(rid.valueBlock.valueHexView, hash("sha1", keyBits(cert)));
  }
  return false;
}

function hasOcspSigning(cert: pkijs.Certificate): boolean {
  const eku = cert.extensions?.find((e) => e.extnID === ID_CE_EXT_KEY_USAGE)?.parsedValue as
    | pkijs.ExtKeyUsage
    | undefined;
  return eku?.keyPurposes.includes(ID_KP_OCSP_SIGNING) ?? false;
}

/** Why a delegated responder certificate may not sign this response, or undefined when it may. */
async function delegateProblem(
  cert: pkijs.Certificate,
  issuer: pkijs.Certificate,
  thisUpdate: Date,
  nextUpdate: Date,
): Promise<string | undefined> {
  const name = `OCSP signer certificate "${
    cert.subject.typesAndValues.map((t) => t.value.valueBlock.value).join(",")
  }"`;
  let signedByIssuer = false;
  try {
    signedByIssuer = cert.issuer.isEqual(issuer.subject) && await cert.verify(issuer);
  } catch { /* unsupported algorithm: not signed as far as we can tell */ }
  if (!signedByIssuer) return `${name} is not issued by the certificate's issuer`;
  if (!hasOcspSigning(cert)) return `${name} lacks the id-kp-OCSPSigning extended key usage`;
  const notBefore = cert.notBefore.value;
  const notAfter = cert.notAfter.value;
  if (notAfter < nextUpdate) {
    return `${name} expires at ${notAfter.toISOString()}, before the response's nextUpdate ${nextUpdate.toISOString()}`;
  }
  if (notBefore > thisUpdate) {
    return `${name} is valid only from ${notBefore.toISOString()}, after the response's thisUpdate ${thisUpdate.toISOString()}`;
  }
  return undefined;
}

/**
 * Checks a DER OCSPResponse for a leaf certificate issued by `issuerDer`: parse, successful basic
 * response, a SingleResponse whose CertID names the leaf, an authorised signature, a current
 * thisUpdate..nextUpdate window (nextUpdate required), status good. Never throws for a bad response;
 * throws only when the leaf or issuer certificate itself does not parse.
 */
export async function checkOcspResponse(
  resp: Uint8Array,
  leafDer: Uint8Array,
  issuerDer: Uint8Array,
  opts: { now?: Date } = {},
): Promise<OcspCheck> {
  const leaf = parseCert(leafDer, "leaf");
  const issuer = parseCert(issuerDer, "issuer");
  const now = opts.now ?? new Date();
  const invalid = (reason: string, extra: Partial<OcspCheck> = {}): OcspCheck => ({
    ok: false,
    status: "invalid",
    reason,
    ...extra,
  });

  let basic: pkijs.BasicOCSPResponse;
  try {
    const asn = asn1js.fromBER(resp);
    if (asn.offset === -1) return invalid(`Response does not parse: ${asn.result.error}`);
    if (asn.offset !== resp.byteLength) return invalid("Response has trailing bytes after its DER");
    const outer = new pkijs.OCSPResponse({ schema: asn.result });
    const status = outer.responseStatus.valueBlock.valueDec;
    if (status !== 0) return invalid(`Responder answered "${RESPONSE_STATUS[status] || status}"`);
    if (outer.responseBytes?.responseType !== ID_PKIX_OCSP_BASIC) {
      return invalid("Response is not a basic OCSP response");
    }
    basic = pkijs.BasicOCSPResponse.fromBER(
      outer.responseBytes.response.valueBlock.valueHexView as Uint8Array<ArrayBuffer>,
    );
  } catch (e) {
    return invalid(`Response does not parse: ${(e as Error).message}`);
  }

  const single = basic.tbsResponseData.responses.find((r) => certIdMatches(r.certID, leaf, issuer));
  if (!single) {
    return invalid(
      `Response is not for this certificate (serial ${leaf.serialNumber.valueBlock.valueHexView.toHex()})`,
    );
  }
  const thisUpdate = single.thisUpdate;
  const nextUpdate = single.nextUpdate;
  const times = { thisUpdate, nextUpdate };
  if (!nextUpdate) return invalid("Response has no nextUpdate", times);
  if (nextUpdate <= thisUpdate) return invalid("Response's nextUpdate is not after its thisUpdate", times);

  // Who signed: the issuer itself, or a delegated responder certificate carried in the response.
  const rid = basic.tbsResponseData.responderID;
  let signer: pkijs.Certificate | undefined;
  if (isResponder(rid, issuer)) {
    signer = issuer;
  } else {
    const candidates = (basic.certs ?? []).filter((c) => isResponder(rid, c));
    if (candidates.length === 0) {
      return invalid(
        "Response is signed neither by the issuer nor by a responder certificate it includes",
        times,
      );
    }
    let problem = "";
    for (const c of candidates) {
      const p = await delegateProblem(c, issuer, thisUpdate, nextUpdate);
      if (!p) {
        signer = c;
        break;
      }
      problem ||= p;
    }
    if (!signer) return invalid(problem, { ...times, signerNotAfter: candidates[0].notAfter.value });
  }
  const signerNotAfter = signer.notAfter.value;
  const dated = { ...times, signerNotAfter };
  try {
    const verified = await pkijs.getCrypto(true).verifyWithPublicKey(
      basic.tbsResponseData.tbsView as Uint8Array<ArrayBuffer>,
      basic.signature,
      signer.subjectPublicKeyInfo,
      basic.signatureAlgorithm,
    );
    if (!verified) return invalid("Response signature does not verify", dated);
  } catch (e) {
    return invalid(`Response signature cannot be checked: ${(e as Error).message}`, dated);
  }

  // Authentic from here on: a revocation is reported whatever the dates say.
  const cs = single.certStatus as asn1js.BaseBlock;
  if (cs.idBlock.tagClass === 3 && cs.idBlock.tagNumber === 1) {
    const at = (cs as asn1js.Constructed).valueBlock.value[0];
    const when = at instanceof asn1js.GeneralizedTime ? ` at ${at.toDate().toISOString()}` : "";
    return { ok: false, status: "revoked", reason: `Certificate is revoked${when}`, ...dated };
  }
  if (cs.idBlock.tagClass === 3 && cs.idBlock.tagNumber === 2) {
    return { ok: false, status: "unknown", reason: "Responder does not know the certificate", ...dated };
  }
  if (!(cs.idBlock.tagClass === 3 && cs.idBlock.tagNumber === 0)) {
    return invalid("Response has an unrecognised certStatus", dated);
  }
  if (nextUpdate <= now) return invalid(`Response expired at nextUpdate ${nextUpdate.toISOString()}`, dated);
  if (thisUpdate.getTime() > now.getTime() + OCSP_CLOCK_SKEW_MS) {
    return invalid(`Response's thisUpdate ${thisUpdate.toISOString()} is in the future`, dated);
  }
  if (signerNotAfter <= now) {
    return invalid(`Response signer expired at ${signerNotAfter.toISOString()}`, dated);
  }
  return { ok: true, status: "good", ...dated };
}
