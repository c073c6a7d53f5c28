/**
 * ARC (RFC 8617): `arc()` verifies the chain at the data stage (mailauth, strict, over Ferry's resolver):
 * `arc=pass|fail|none` with the chain's instance into Authentication-Results and `c.get("arc")`.
 * `arcSeal()` is an outbound step that adds an ARC set (ARC-Authentication-Results from our own results,
 * ARC-Message-Signature, ARC-Seal with cv=) when a message leaves over a route that crosses the trust
 * boundary (`arc.routes`, default every MX route). A chain that failed (cv=fail) is never extended, and
 * one Ferry did not verify is not sealed either (its cv would be a guess).
 */

import { accept, type Check, type CheckState } from "../check.ts";
import type { DataContext } from "../context.ts";
import type { OutboundStep } from "../delivery_context.ts";
import { mailauthResolver } from "./_mailauth_dns.ts";
import { arcModule, dkimVerifyModule } from "./_mailauth.ts";
import { rawDkimVerify } from "./dkim.ts";
import type { DkimKey } from "./dkim_sign.ts";

/** What arc() keeps (`c.get("arc")`). */
export interface ArcOutcome {
  /** pass, fail or none */
  result: string;
  /** Highest instance of the chain (0 without one) */
  instance: number;
  /** Why, when not pass */
  reason?: string;
  /** The Authentication-Results method result */
  authResult: string;
}

declare module "../variables.ts" {
  interface VariableMap {
    arc: ArcOutcome;
    authResults: string[];
  }
}

function clean(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").replace(/[()\\]/g, "");
}

/** Verifies the ARC chain of `message` (exported for tests and tools). */
export async function verifyArc(
  message: Uint8Array,
  resolver: ReturnType<typeof mailauthResolver>,
  ip?: string,
): Promise<ArcOutcome> {
  const raw = await rawDkimVerify(message, resolver);
  const { arc: mailauthArc } = await arcModule();
  // deno-lint-ignore no-explicit-any
  const res = await mailauthArc(raw.arc as any, { resolver, strict: true, ip } as never);
  const result = String(res.status?.result ?? "none");
  const instance = typeof res.i === "number" ? res.i : 0;
  const reason = res.status?.comment ? clean(String(res.status.comment)) : undefined;
  const authResult = result === "none"
    ? "arc=none"
    : `arc=${result} (i=${instance}${reason && result !== "pass" ? `; ${reason}` : ""})` +
      (ip ? ` smtp.remote-ip=${ip}` : "");
  return { result, instance, reason, authResult };
}

/** The ARC verification check for `checks: [dkim(), arc(), dmarc()]`. */
export function arc(): Check {
  return {
    name: "arc",
    async open() {
      await Promise.all([arcModule(), dkimVerifyModule()]);
    },
    message(): CheckState {
      return {
        async data(c: DataContext) {
          const o = await verifyArc(c.content, mailauthResolver(c.resolver), c.client.ip);
          c.set("arc", o);
          c.log(`ARC ${o.result}${o.instance ? ` i=${o.instance}` : ""}${o.reason ? ` (${o.reason})` : ""}`);
          return accept({ authResults: [o.authResult] });
        },
      };
    },
  };
}

/** Sealing settings (`arc.seal`, `arc.routes`). */
export interface ArcSealSettings {
  key: DkimKey;
  /** Route names that cross the trust boundary; undefined: every MX route */
  routes?: readonly string[];
  /** Our authserv-id, for ARC-Authentication-Results */
  authservId: string;
}

/** Splits "Name: value\r\n Name2: …" into fields (folded lines kept). */
function splitFields(text: string): { name: string; value: string }[] {
  return text.replace(/\r\n$/, "").split(/\r\n(?![ \t])/).filter(Boolean).map((f) => {
    const colon = f.indexOf(":");
    return { name: f.slice(0, colon), value: f.slice(colon + 1).replace(/^ /, "") };
  });
}

/** The outbound step adding an ARC set. */
export function arcSeal(s: ArcSealSettings): OutboundStep {
  const privateKey = s.key.key.export({ type: "pkcs8", format: "pem" }).toString();
  // Loaded now (not awaited) so that the first sealed message does not wait for the import.
  arcModule().catch(() => {});
  return async function arc_seal(c, next) {
    const applies = s.routes ? s.routes.includes(c.route.name) : c.route.mx;
    if (applies) {
      const verified = c.get("arc") as ArcOutcome | undefined;
      const hasChain = c.headers.some((h) => h.name.toLowerCase() === "arc-seal");
      if (verified?.result === "fail") {
        c.log("ARC: not sealed: the chain failed verification (cv=fail is never extended)");
      } else if (hasChain && !verified) {
        c.log("ARC: not sealed: the message has an ARC chain Ferry did not verify");
      } else {
        const results = (c.get("authResults") as string[] | undefined) ?? [];
        const { sealMessage } = await arcModule();
        const headers = await sealMessage(c.content as unknown as Buffer, {
          signingDomain: s.key.domain,
          selector: s.key.selector,
          privateKey,
          algorithm: s.key.algorithm,
          cv: verified?.result === "pass" ? "pass" : "none",
          authResults: `${s.authservId}; ${results.length ? results.join(";\r\n\t") : "none"}`,
          signTime: new Date(),
        } as never);
        const fields = splitFields(new TextDecoder().decode(headers));
        if (fields.length === 0) c.log("ARC: not sealed: mailauth created no ARC set");
        // addHeader puts each new field above the previous one: add bottom-up to keep mailauth's order.
        for (const f of fields.reverse()) c.addHeader(f.name, f.value);
        if (fields.length) c.log(`ARC sealed as d=${s.key.domain} s=${s.key.selector}`);
      }
    }
    await next();
  };
}
