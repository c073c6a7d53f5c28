/**
 * DKIM test material: RSA and Ed25519 key pairs with their DNS key records, and dkimpy (Debian's python3-dkim
 * under /usr/bin/python3) signing and verifying with a DNS function that answers from the records given.
 */

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";

/** A key pair as Ferry (PEM file), DNS (key record) and dkimpy (private key) need it. */
export interface TestDkimKey {
  domain: string;
  selector: string;
  algorithm: "rsa-sha256" | "ed25519-sha256";
  pem: string;
  /** What dkimpy takes as privkey: the PEM for RSA, the base64 seed for Ed25519 */
  dkimpyKey: string;
  /** The TXT record at `selector._domainkey.domain` */
  record: string;
}

/** Makes a key pair for `selector._domainkey.domain`. */
export function makeKey(
  domain: string,
  selector: string,
  algorithm: "rsa-sha256" | "ed25519-sha256",
  bits = 2048,
): TestDkimKey {
  if (algorithm === "rsa-sha256") {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
    const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    const spki = publicKey.export({ type: "spki", format: "der" }).toString("base64");
    return { domain, selector, algorithm, pem, dkimpyKey: pem, record: `v=DKIM1; k=rsa; p=${spki}` };
  }
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const seed = privateKey.export({ type: "pkcs8", format: "der" }).subarray(-32).toString("base64");
  const raw = publicKey.export({ type: "spki", format: "der" }).subarray(-32).toString("base64");
  return { domain, selector, algorithm, pem, dkimpyKey: seed, record: `v=DKIM1; k=ed25519; p=${raw}` };
}

/** The TXT owner name of a key. */
export function keyName(k: TestDkimKey): string {
  return `${k.selector}._domainkey.${k.domain}`;
}

const SCRIPT = `
import base64, json, sys, dkim
req = json.load(sys.stdin)
records = {k.encode(): v.encode() for k, v in req["records"].items()}
def dnsfunc(name, timeout=5):
    return records.get(name.rstrip(b"."))
msg = base64.b64decode(req["message"])
if req["op"] == "arc_sign":
    s = req["signer"]
    sig = dkim.arc_sign(msg, s["selector"].encode(), s["domain"].encode(), s["key"].encode(), s["srv_id"].encode(),
                        signature_algorithm=s["algorithm"].encode())
    print(json.dumps({"message": base64.b64encode(b"".join(sig) + msg).decode()}))
elif req["op"] == "arc_verify":
    cv, results, comment = dkim.arc_verify(msg, dnsfunc=dnsfunc)
    print(json.dumps({"cv": cv.decode(), "instances": len(results), "comment": comment}))
elif req["op"] == "sign":
    out = msg
    for s in req["signers"]:
        sig = dkim.sign(out, s["selector"].encode(), s["domain"].encode(), s["key"].encode(),
                        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=s["algorithm"].encode(),
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"], length=s.get("length", False))
        out = sig + out
    print(json.dumps({"message": base64.b64encode(out).decode()}))
else:
    d = dkim.DKIM(msg)
    n = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
    results = []
    for i in range(n):
        try:
            results.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
        except Exception as e:
            results.append(False)
    print(json.dumps({"results": results}))
`;

async function run(req: unknown): Promise<Record<string, unknown>> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", SCRIPT],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(req)));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  assert.ok(out.success, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout));
}

/** Signs `message` with dkimpy, once per signer (the first signer's signature ends up at the bottom). */
export async function dkimpySign(
  message: Uint8Array,
  signers: { key: TestDkimKey; algorithm?: string; length?: boolean }[],
): Promise<Uint8Array> {
  const r = await run({
    op: "sign",
    message: message.toBase64(),
    records: {},
    signers: signers.map((s) => ({
      selector: s.key.selector,
      domain: s.key.domain,
      key: s.key.dkimpyKey,
      algorithm: s.algorithm ?? s.key.algorithm,
      length: s.length ?? false,
    })),
  });
  return Uint8Array.fromBase64(r.message as string);
}

/** Verifies every DKIM-Signature of `message` with dkimpy, top one first; true where it verified. */
export async function dkimpyVerify(message: Uint8Array, keys: TestDkimKey[]): Promise<boolean[]> {
  const records = Object.fromEntries(keys.map((k) => [keyName(k), k.record]));
  const r = await run({ op: "verify", message: message.toBase64(), records });
  return r.results as boolean[];
}

/** Adds an ARC set with dkimpy (`srvId` must match an Authentication-Results field of the message). */
export async function dkimpyArcSign(
  message: Uint8Array,
  key: TestDkimKey,
  srvId: string,
): Promise<Uint8Array> {
  const r = await run({
    op: "arc_sign",
    message: message.toBase64(),
    records: {},
    signer: {
      selector: key.selector,
      domain: key.domain,
      key: key.dkimpyKey,
      algorithm: key.algorithm,
      srv_id: srvId,
    },
  });
  return Uint8Array.fromBase64(r.message as string);
}

/** dkimpy's verdict on the ARC chain: cv ("pass", "fail", "none") and the number of sets it checked. */
export async function dkimpyArcVerify(
  message: Uint8Array,
  keys: TestDkimKey[],
): Promise<{ cv: string; instances: number; comment: string }> {
  const records = Object.fromEntries(keys.map((k) => [keyName(k), k.record]));
  return await run({ op: "arc_verify", message: message.toBase64(), records }) as {
    cv: string;
    instances: number;
    comment: string;
  };
}
