/**
 * SRS in Ferry's chains: `srsForwardStep` rewrites the sender at delivery (outbound chain) when a route
 * forwards mail whose sender domain is not ours; `srsReverseStep` (rcpt) turns a recipient that is an SRS
 * address of our SRS domain back into the original sender (rewritten at the data stage by
 * `srsRewriteStep`), and refuses an invalid or expired one with 550 5.1.1.
 */

import type { HostList } from "../../core/host_list.ts";
import type { PolicyMiddleware } from "../context.ts";
import type { OutboundStep } from "../delivery_context.ts";
import { isSrs, SrsError, srsForward, type SrsOptions, srsReverse } from "../srs.ts";
import { utf8Length } from "../../core/utf8.ts";

/** SRS as configured (`srs` in config.ts), secrets loaded. */
export interface SrsSettings extends SrsOptions {
  /** Our SRS domain: forward addresses are @ it, reverse accepts only it */
  domain: string;
  /** Senders of these domains are ours and never rewritten */
  localDomains: HostList;
  /** Route names whose mail is rewritten; undefined: every MX route */
  routes?: readonly string[];
}

declare module "../variables.ts" {
  interface VariableMap {
    /** SRS recipients of this message and the addresses they reverse to */
    srsReverse: Record<string, string>;
  }
}

function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : address.slice(at + 1).toLowerCase();
}

/** The outbound step doing forward rewriting. */
export function srsForwardStep(s: SrsSettings): OutboundStep {
  return async function srs_forward(c, next) {
    const applies = s.routes ? s.routes.includes(c.route.name) : c.route.mx;
    const sender = c.sender;
    const domain = domainOf(sender);
    if (applies && sender && domain && domain !== s.domain.toLowerCase()) {
      if (!(await s.localDomains.match({ name: domain }))) {
        try {
          const rewritten = srsForward(sender, s.domain, s);
          const local = rewritten.slice(0, rewritten.lastIndexOf("@"));
          if (utf8Length(local) > 64) {
            // RFC 5321 4.5.3.1.1: a longer local part may be refused; sending it unrewritten is safer.
            c.log(`SRS: <${sender}> not rewritten: the SRS local part would be longer than 64 octets`);
          } else {
            c.setSender(rewritten);
            c.log(`SRS: <${sender}> rewritten to <${rewritten}>`);
          }
        } catch (err) {
          c.log(`SRS: <${sender}> not rewritten: ${(err as Error).message}`);
        }
      }
    }
    await next();
  };
}

/** True when `c.recipient` was accepted as a valid SRS address of ours (relay control lets it through). */
export function srsPermitted(
  c: { get(key: "srsReverse"): Record<string, string> | undefined },
  address: string,
) {
  return c.get("srsReverse")?.[address] !== undefined;
}

/** Whether `address` is in SRS form at our SRS domain (valid or not). */
function srsOfOurs(s: SrsSettings, address: string): boolean {
  const at = address.lastIndexOf("@");
  return at >= 0 && domainOf(address) === s.domain.toLowerCase() && isSrs(address.slice(0, at));
}

/** The original address `address` reverses to when it is a valid SRS address of our domain; else undefined. */
export function srsOriginal(s: SrsSettings, address: string): string | undefined {
  if (!srsOfOurs(s, address)) return undefined;
  try {
    return srsReverse(address, s);
  } catch {
    return undefined;
  }
}

/** The rcpt step checking SRS addresses of our domain: valid → remembered, invalid or expired → 550 5.1.1. */
export function srsReverseStep(s: SrsSettings): PolicyMiddleware<"rcpt"> {
  return async function srs_reverse(c, next) {
    const { address } = c.recipient;
    if (srsOfOurs(s, address)) {
      let original = "";
      try {
        original = srsReverse(address, s);
      } catch (err) {
        const why = err instanceof SrsError ? err.message : String(err);
        c.log(`SRS: <${address}> refused: ${why}`);
        c.reject("Invalid or expired SRS address", 550, "5.1.1");
      }
      c.set("srsReverse", { ...c.get("srsReverse"), [address]: original });
      c.log(`SRS: <${address}> reverses to <${original}>`);
    }
    await next();
  };
}

/** The data step replacing each SRS recipient by the address it reverses to. */
export function srsRewriteStep(): PolicyMiddleware<"data"> {
  return async function srs_rewrite(c, next) {
    for (const [address, original] of Object.entries(c.get("srsReverse") ?? {})) {
      if (c.recipients.some((r) => r.address === address)) c.rewriteRecipient(address, [original]);
    }
    await next();
  };
}
