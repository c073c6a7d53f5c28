/**
 * DKIM verification (RFC 6376, RFC 8301, RFC 8463) as a check: at the data stage every DKIM-Signature is
 * verified by mailauth in strict mode over Ferry's resolver — rsa-sha256 and ed25519-sha256 accepted,
 * rsa-sha1 and RSA keys under 1024 bits refused (`policy`), a body length limit (l=) reported. Results go to
 * `c.get("dkim")` (DMARC reads them) and, one per signature, into Authentication-Results.
 * SECURITY: signatures are untrusted input; their tags are only echoed after mailauth parsed them.
 */

import type { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { accept, type Check, type CheckState, type VerdictAction } from "../check.ts";
import type { DataContext } from "../context.ts";
import { mailauthResolver } from "./_mailauth_dns.ts";
import { dkimVerifyModule } from "./_mailauth.ts";

/** One signature's result. */
export interface DkimSignatureResult {
  /** pass, fail, neutral, policy, temperror, permerror (RFC 8601 2.7.1) */
  result: string;
  /** d= */
  domain: string;
  /** s= */
  selector: string;
  /** a= */
  algorithm: string;
  /** The first 8 characters of b= (RFC 6008 header.b) */
  b: string;
  /** Why, when not pass */
  reason?: string;
  /** l= was set: this many body octets are not covered */
  unsignedBodyOctets?: number;
  /** The Authentication-Results method result */
  authResult: string;
}

/** What the check keeps (`c.get("dkim")`). */
export interface DkimOutcome {
  signatures: DkimSignatureResult[];
  /** Addresses of the From header field(s) */
  headerFrom: string[];
  /** Number of From fields (RFC 5322 allows one) */
  fromFields: number;
}

declare module "../variables.ts" {
  interface VariableMap {
    dkim: DkimOutcome;
  }
}

/** Options of `dkim()`. */
export interface DkimOptions {
  /** Verdict when no signature passes but some failed (default "accept": DMARC decides) */
  onFail?: VerdictAction;
  /** Verdict when a key lookup failed temporarily and nothing passed (default "accept") */
  onTemperror?: VerdictAction;
  /** Smallest RSA key accepted, in bits (default 1024, RFC 8301) */
  minKeyBits?: number;
}

function clean(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").replace(/[()\\]/g, "");
}

/** mailauth's verification result, whose hidden `arc` property carries the ARC chain for arc(). */
export type RawDkimResult = Awaited<ReturnType<typeof dkimVerify>> & { arc?: unknown };

// One verification per message: dkim(), arc() and dmarc() all see the same c.content object.
const verified = new WeakMap<Uint8Array, Promise<RawDkimResult>>();

/** mailauth's DKIM verification of `message`, done once per message object. */
export function rawDkimVerify(
  message: Uint8Array,
  resolver: ReturnType<typeof mailauthResolver>,
  opts: { minKeyBits?: number; now?: number } = {},
): Promise<RawDkimResult> {
  let p = verified.get(message);
  if (!p) {
    p = dkimVerifyModule().then(({ dkimVerify }) =>
      dkimVerify(message as unknown as Buffer, {
        resolver,
        strict: true,
        minBitLength: opts.minKeyBits ?? 1024,
        curTime: opts.now,
      }) as Promise<RawDkimResult>
    );
    verified.set(message, p);
  }
  return p;
}

/** Verifies every signature of `message` (exported for tools and tests; the check calls it). */
export async function verifyDkim(
  message: Uint8Array,
  resolver: ReturnType<typeof mailauthResolver>,
  opts: { minKeyBits?: number; now?: number } = {},
): Promise<DkimOutcome> {
  const res = await rawDkimVerify(message, resolver, opts);
  const signatures = (res.results ?? []).filter((r) => r.signingDomain || r.status?.result !== "none").map(
    (r): DkimSignatureResult => {
      const result = String(r.status?.result ?? "permerror");
      const domain = String(r.signingDomain ?? "");
      const unsigned = r.status?.underSized;
      const reason = r.status?.comment ? clean(String(r.status.comment)) : undefined;
      const b = String(r.signature ?? "").slice(0, 8);
      const props = [
        domain ? `header.d=${domain}` : "",
        r.selector ? `header.s=${r.selector}` : "",
        r.algo ? `header.a=${r.algo}` : "",
        b ? `header.b=${b.replace(/[^A-Za-z0-9+/=]/g, "")}` : "",
      ].filter(Boolean).join(" ");
      const comment = [reason, unsigned ? `${unsigned} body octets unsigned (l=)` : ""].filter(Boolean).join(
        "; ",
      );
      return {
        result,
        domain,
        selector: String(r.selector ?? ""),
        algorithm: String(r.algo ?? ""),
        b,
        reason,
        unsignedBodyOctets: unsigned || undefined,
        authResult: `dkim=${result}${comment ? ` (${comment})` : ""}${props ? ` ${props}` : ""}`,
      };
    },
  );
  return { signatures, headerFrom: res.headerFrom ?? [], fromFields: res.fromFields ?? 0 };
}

/** The DKIM verification check for `checks: [dkim()]`. */
export function dkim(options: DkimOptions = {}): Check {
  return {
    name: "dkim",
    async open() {
      await dkimVerifyModule();
    },
    message(): CheckState {
      return {
        async data(c: DataContext) {
          const o = await verifyDkim(c.content, mailauthResolver(c.resolver), options);
          c.set("dkim", o);
          const passed = o.signatures.filter((s) => s.result === "pass");
          c.log(
            o.signatures.length
              ? `DKIM: ${o.signatures.map((s) => `${s.result} d=${s.domain} s=${s.selector}`).join(", ")}`
              : "DKIM: no signature",
          );
          const authResults = o.signatures.length ? o.signatures.map((s) => s.authResult) : ["dkim=none"];
          const temp = o.signatures.some((s) => s.result === "temperror");
          const action = passed.length || !o.signatures.length
            ? "accept"
            : temp
            ? options.onTemperror ?? "accept"
            : options.onFail ?? "accept";
          if (action === "accept") return accept({ authResults });
          return {
            action,
            reason: action === "defer"
              ? "DKIM key lookup failed, try again later"
              : "DKIM signature did not verify",
            enhanced: action === "defer" ? "4.7.5" : "5.7.20",
            authResults,
          };
        },
      };
    },
  };
}
