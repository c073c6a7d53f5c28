/** A probe shared by the MTA-STS policy tests: which MX hosts the policy in force lets a delivery use. */

import assert from "node:assert/strict";
import type { MtaStsPolicy } from "../../src/outbound/security/mta_sts.ts";
import { Requirement } from "../../src/outbound/security/levels.ts";
import type { TargetHost } from "../../src/outbound/routing.ts";

/** Which of `mx1.<domain>` and `mx2.<domain>` the policy in force for one delivery to `domain` accepts. */
export async function acceptedMx(sts: MtaStsPolicy, domain: string): Promise<string[]> {
  const check = await sts.prepareDomain({ domain, viaMx: true, mxSecure: false });
  assert.ok(check, `a policy is in force for ${domain}`);
  const out: string[] = [];
  for (const name of [`mx1.${domain}`, `mx2.${domain}`]) {
    const req = new Requirement();
    const target: TargetHost = { name, ip: "127.0.0.1", port: 25, preference: 10 };
    await check(req, target);
    if (!req.failure) out.push(name);
  }
  return out;
}
