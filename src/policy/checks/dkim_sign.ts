/**
 * DKIM signing at delivery (RFC 6376, RFC 8463): an outbound step that signs each message whose From domain
 * is a configured signing domain (or a subdomain of it), with every key configured for that domain (rsa and
 * ed25519 at once), relaxed/relaxed, headers over-signed. Keys are read and checked at start
 * (`loadDkimKeys`): a missing or unusable key file is a configuration error naming the file.
 * SECURITY: private keys stay in memory as KeyObjects; nothing logs them.
 */

import { createPrivateKey, type KeyObject } from "node:crypto";
import { parseHeaders } from "../../core/headers.ts";
import type { OutboundStep } from "../delivery_context.ts";
import { dkimSignatureValue } from "./_dkim_canon.ts";

/** One signing key as configured (`dkim.sign[]`). */
export interface DkimSignSpec {
  domain: string;
  selector: string;
  keyFile: string;
  /** Default: from the key type */
  algorithm?: "rsa-sha256" | "ed25519-sha256";
  /** Header fields to sign (default DEFAULT_SIGNED_HEADERS), each listed once more than it occurs */
  headers?: string[];
}

/** A loaded signing key. */
export interface DkimKey {
  domain: string;
  selector: string;
  algorithm: "rsa-sha256" | "ed25519-sha256";
  key: KeyObject;
  headers: readonly string[];
}

/** The fields signed by default (RFC 6376 5.4.1's recommendations plus MIME and list fields). */
export const DEFAULT_SIGNED_HEADERS = [
  "From",
  "Reply-To",
  "Subject",
  "Date",
  "To",
  "Cc",
  "Message-ID",
  "In-Reply-To",
  "References",
  "MIME-Version",
  "Content-Type",
  "Content-Transfer-Encoding",
  "List-Id",
  "List-Unsubscribe",
  "List-Unsubscribe-Post",
];

/** Loads every key; throws `problems` (one line each, naming the option and the file) when any is unusable. */
export async function loadDkimKeys(
  specs: readonly DkimSignSpec[],
  option = "dkim.sign",
): Promise<{ keys: DkimKey[]; problems: string[] }> {
  const keys: DkimKey[] = [];
  const problems: string[] = [];
  for (const [i, s] of specs.entries()) {
    const where = `${option}[${i}].keyFile`;
    let pem: string;
    try {
      pem = await Deno.readTextFile(s.keyFile);
    } catch (err) {
      problems.push(`${where}: "${s.keyFile}" cannot be read: ${(err as Error).message}`);
      continue;
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(pem);
    } catch (err) {
      problems.push(`${where}: "${s.keyFile}" is not a PEM private key: ${(err as Error).message}`);
      continue;
    }
    const type = key.asymmetricKeyType;
    const algorithm = s.algorithm ?? (type === "ed25519" ? "ed25519-sha256" : "rsa-sha256");
    if (type !== algorithm.split("-")[0]) {
      problems.push(`${where}: "${s.keyFile}" holds a ${type} key, but the algorithm is ${algorithm}`);
      continue;
    }
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (type === "rsa" && bits < 1024) {
      problems.push(`${where}: "${s.keyFile}" is a ${bits}-bit RSA key; RFC 8301 needs at least 1024 bits`);
      continue;
    }
    keys.push({
      domain: s.domain.toLowerCase(),
      selector: s.selector,
      algorithm,
      key,
      headers: s.headers ?? DEFAULT_SIGNED_HEADERS,
    });
  }
  return { keys, problems };
}

/** The domain of the (first) From address, lower case, or "" when there is none. */
export function fromDomain(value: string | undefined): string {
  if (!value) return "";
  const angle = /<([^>]*)>/.exec(value);
  const addr = (angle ? angle[1] : value).trim();
  const at = addr.lastIndexOf("@");
  return at < 0 ? "" : addr.slice(at + 1).replace(/[>\s,;].*$/, "").toLowerCase();
}

/** The outbound step signing with `keys`. */
export function dkimSign(keys: readonly DkimKey[], now: () => number = Date.now): OutboundStep {
  return async function dkim_sign(c, next) {
    const from = fromDomain(c.headers.find((h) => h.name.toLowerCase() === "from")?.value);
    const mine = keys.filter((k) => from === k.domain || from.endsWith(`.${k.domain}`));
    if (mine.length) {
      // Every signature covers the same message: the one before any of them is added.
      const content = c.content;
      const time = Math.floor(now() / 1000);
      const values = mine.map((k) => dkimSignatureValue(content, { ...k, time }));
      // Added in reverse so the first configured key's signature ends up on top.
      for (const v of values.reverse()) c.addHeader("DKIM-Signature", v.replace(/^ /, ""));
      c.log(`DKIM signed as ${mine.map((k) => `d=${k.domain} s=${k.selector} a=${k.algorithm}`).join(", ")}`);
    }
    await next();
  };
}

/** For tests and tools: parses the From domain of a whole message. */
export function messageFromDomain(message: Uint8Array): string {
  return fromDomain(parseHeaders(message).find((h) => h.name.toLowerCase() === "from")?.value);
}
