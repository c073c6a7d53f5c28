/**
 * DMARC (RFC 7489) as a check at the data stage: the From domain's policy found over Ferry's resolver
 * (mailauth, strict), SPF and DKIM identifiers aligned (relaxed or strict per aspf/adkim), `p`/`sp` applied
 * and `pct` sampled (6.6.4: a message outside the sample gets the next weaker policy). The outcome carries
 * Exim's words — `accept`, `reject`, `quarantine`, `none`, `norecord`, `nofrom`, `temperror` — with
 * `dmarc_status_text`, `dmarc_used_domain`, `dmarc_domain_policy` and `dmarc_ar_header` content.
 * It reads `c.get("spf")` and `c.get("dkim")`, so list it after spf() and dkim(); without dkim() it verifies
 * the signatures itself. `c.set("dmarcDisableVerify", true)` at any stage (Exim's control =
 * dmarc_disable_verify) skips it for that connection or message.
 */

import { accept, type Check, type CheckState, type Verdict, type VerdictAction } from "../check.ts";
import type { DataContext } from "../context.ts";
import { type MailauthResolver, mailauthResolver } from "./_mailauth_dns.ts";
import { dkimVerifyModule, dmarcModule } from "./_mailauth.ts";
import { type DkimOutcome, verifyDkim } from "./dkim.ts";
import type { SpfOutcome } from "./spf.ts";
import type { DmarcHistoryEntry, DmarcReportSink } from "../dmarc_history.ts";

/** Exim's `$dmarc_status` values. */
export type DmarcStatus = "accept" | "reject" | "quarantine" | "none" | "norecord" | "nofrom" | "temperror";

/** What the check keeps (`c.get("dmarc")`), named after Exim's variables. */
export interface DmarcOutcome {
  /** `$dmarc_status` */
  status: DmarcStatus;
  /** `$dmarc_status_text` */
  statusText: string;
  /** `$dmarc_used_domain`: the domain whose record was used (or the From domain) */
  usedDomain: string;
  /** `$dmarc_domain_policy`: the published policy that applies (p, or sp for a subdomain) */
  domainPolicy: string;
  /** `$dmarc_ar_header`: the Authentication-Results method result */
  arHeader: string;
  /** RFC 7489 result: pass, fail, none, temperror, permerror */
  result: string;
  /** The From domain */
  fromDomain: string;
  /** Aligned identifiers that passed */
  alignedSpf?: string;
  alignedDkim?: string;
  /** The record's tags (for reports) */
  tags: Record<string, string>;
  /** True when pct sampling weakened the policy */
  sampledOut: boolean;
  /** The policy applied after sampling: none, quarantine, reject */
  applied: string;
}

declare module "../variables.ts" {
  interface VariableMap {
    dmarc: DmarcOutcome;
    /** Exim's control = dmarc_disable_verify */
    dmarcDisableVerify: boolean;
    /** Exim's control = dmarc_enable_forensic */
    dmarcEnableForensic: boolean;
  }
}

/** Options of `dmarc()`. */
export interface DmarcOptions {
  /**
   * Verdict per applied policy (default: reject → reject 550 5.7.1, quarantine → quarantine, temperror →
   * defer 451 4.7.1: a DNS failure never becomes a 5xx nor lets a spoof through)
   */
  actions?: Partial<Record<"reject" | "quarantine" | "temperror", VerdictAction>>;
  /** Random source for pct sampling (tests), 0 ≤ n < 1 */
  random?: () => number;
  /** Called with every evaluated outcome (aggregate report history) */
  record?: (o: DmarcOutcome, c: DataContext) => void | Promise<void>;
}

/** Parses a DMARC record's tags (`v=DMARC1; p=reject; …`). */
export function dmarcTags(record: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (record ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) out[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim();
  }
  return out;
}

const WEAKER: Record<string, string> = { reject: "quarantine", quarantine: "none", none: "none" };

/** Evaluates DMARC for a message given its SPF and DKIM outcomes (exported for tools and tests). */
export async function evaluateDmarc(
  input: {
    headerFrom: string[];
    fromFields: number;
    spf?: Pick<SpfOutcome, "result" | "domain" | "identity">;
    dkim: DkimOutcome;
  },
  resolver: ReturnType<typeof mailauthResolver>,
  random: () => number = Math.random,
): Promise<DmarcOutcome> {
  // The SPF result is the MAIL FROM identity's, which for the null sender is postmaster@HELO (RFC 7208 2.4):
  // DMARC uses it either way (RFC 7489 4.1), as libopendmarc does with Exim's HELO-origin SPF result.
  const spfDomains = input.spf?.result === "pass" ? [input.spf.domain] : [];
  const dkimDomains = input.dkim.signatures.filter((s) => s.result === "pass").map((s) => ({
    domain: s.domain,
    underSized: s.unsignedBodyOctets,
  }));
  const { dmarc: mailauthDmarc } = await dmarcModule();
  const res = await mailauthDmarc({
    headerFrom: input.headerFrom,
    fromFields: input.fromFields,
    spfDomains,
    dkimDomains,
    resolver: tldFailuresAsNone(resolver),
    strict: true,
  });
  if (!res) {
    return {
      status: "nofrom",
      statusText: "No usable From domain: DMARC cannot be evaluated",
      usedDomain: "",
      domainPolicy: "",
      arHeader: "dmarc=none (no single author domain)",
      result: "none",
      fromDomain: "",
      tags: {},
      sampledOut: false,
      applied: "none",
    };
  }
  const result = String(res.status?.result ?? "temperror");
  const fromDomain = String(res.status?.header?.from ?? res.domain ?? "");
  const tags = dmarcTags(res.rr);
  const usedDomain = String(res.policyDomain ?? res.domain ?? fromDomain);
  const domainPolicy = String(res.policy ?? tags.p ?? "none");
  const base = {
    result,
    fromDomain,
    usedDomain,
    domainPolicy,
    tags,
    alignedSpf: res.alignment?.spf?.result,
    alignedDkim: res.alignment?.dkim?.result,
    arHeader: String(res.info ?? `dmarc=${result}`),
  };
  if (result === "temperror") {
    return {
      ...base,
      status: "temperror",
      statusText: `Temporary error looking up the DMARC record of ${fromDomain}`,
      sampledOut: false,
      applied: "none",
    };
  }
  if (result === "none" || !res.rr) {
    return {
      ...base,
      status: "norecord",
      statusText: `No DMARC record for ${fromDomain}`,
      sampledOut: false,
      applied: "none",
    };
  }
  if (result === "pass") {
    return { ...base, status: "accept", statusText: "Accepted by DMARC", sampledOut: false, applied: "none" };
  }
  // fail (or permerror): the policy applies, sampled by pct (RFC 7489 6.6.4).
  const pct = /^\d+$/.test(tags.pct ?? "") ? Math.min(100, Number(tags.pct)) : 100;
  const sampledOut = pct < 100 && random() * 100 >= pct;
  const applied = sampledOut ? WEAKER[domainPolicy] ?? "none" : domainPolicy;
  const status: DmarcStatus = applied === "reject"
    ? "reject"
    : applied === "quarantine"
    ? "quarantine"
    : "none";
  const statusText = status === "none"
    ? `DMARC failed for ${fromDomain}, policy ${domainPolicy}${
      sampledOut ? ` (not sampled, pct=${pct})` : ""
    }`
    : `DMARC policy of ${fromDomain} says ${status}${sampledOut ? ` (weakened by pct=${pct})` : ""}`;
  return { ...base, status, statusText, sampledOut, applied };
}

/** The aggregate-report row for one evaluated message. */
function historyEntry(o: DmarcOutcome, c: DataContext, dkim: DkimOutcome, action: string): DmarcHistoryEntry {
  const spf = c.get("spf");
  const at = c.sender.lastIndexOf("@");
  const mailFrom = at < 0 ? "" : c.sender.slice(at + 1).toLowerCase();
  const envelopeFrom = spf?.domain ?? (mailFrom || (c.helo ?? "").toLowerCase());
  const firstRcpt = c.recipients[0]?.domain?.toLowerCase();
  const disposition = action === "reject" ? "reject" : action === "quarantine" ? "quarantine" : "none";
  const reason = o.sampledOut
    ? "sampled_out"
    : (o.status === "reject" || o.status === "quarantine") && disposition !== o.status
    ? "local_policy"
    : undefined;
  return {
    at: Date.now(),
    policyDomain: o.usedDomain || o.fromDomain,
    tags: o.tags,
    sourceIp: c.client.ip,
    headerFrom: o.fromDomain,
    envelopeFrom,
    envelopeTo: firstRcpt || undefined,
    mailFrom: c.sender,
    disposition,
    dkimAligned: o.alignedDkim !== undefined,
    spfAligned: o.alignedSpf !== undefined,
    reason,
    dkim: dkim.signatures.filter((s) => s.domain).map((s) => ({
      domain: s.domain,
      selector: s.selector || undefined,
      result: s.result,
    })),
    spf: {
      domain: envelopeFrom,
      scope: spf?.identity === "helo" ? "helo" : "mfrom",
      result: spf?.result ?? "none",
    },
  };
}

/** A TXT question for a top-level domain's DMARC record: `_dmarc.<one label>`. */
const TLD_RECORD = /^_dmarc\.[^.]+\.?$/i;
/** How long a TLD's failed lookup is not asked again (RFC 2308 7.1: server failures up to 5 minutes). */
const TLD_FAILURE_MS = 5 * 60_000;
/** TLD record names whose lookup failed, and until when they are not asked again */
const failedTlds = new Map<string, number>();

function noRecord(name: string, why: string): Error & { code: string } {
  const none = new Error(`${name}: ${why}, taken as no record`) as Error & { code: string };
  none.code = "ENOTFOUND";
  return none;
}

/**
 * mailauth finds Organizational Domains by RFC 9989's DNS Tree Walk, which goes up to `_dmarc.<tld>`; RFC
 * 7489, which Ferry follows, takes them from the public suffix list and never asks a top-level domain. So a
 * failing lookup of a TLD's record (a resolver that cannot reach the root: a test or split-horizon setup)
 * counts as no record there, instead of making every walk that reaches it, and with it the evaluation of
 * every subdomain's mail, a temperror. Failures of any other name stay failures.
 */
function tldFailuresAsNone(resolver: MailauthResolver): MailauthResolver {
  return async (name, type) => {
    const tld = type.toUpperCase() === "TXT" && TLD_RECORD.test(name) ? name.toLowerCase() : undefined;
    // A failure is remembered for a while, so a resolver that times out there delays one message, not each.
    if (tld !== undefined && (failedTlds.get(tld) ?? 0) > Date.now()) throw noRecord(name, "failed lately");
    try {
      return await resolver(name, type);
    } catch (err) {
      const code = (err as { code?: string })?.code;
      if (tld === undefined || code === "ENOTFOUND" || code === "ENODATA") throw err;
      if (failedTlds.size > 1000) failedTlds.clear();
      failedTlds.set(tld, Date.now() + TLD_FAILURE_MS);
      throw noRecord(name, `no answer (${code})`);
    }
  };
}

/** The DMARC check for `checks: [spf(), dkim(), dmarc()]`. */
export function dmarc(options: DmarcOptions = {}): Check {
  let canQuarantine = false;
  let reports: DmarcReportSink | undefined;
  let authservId = "localhost";
  return {
    name: "dmarc",
    async open(services) {
      canQuarantine = services.canQuarantine ?? false;
      reports = services.dmarcReports;
      authservId = services.authservId;
      // Without dkim() configured, data() verifies DKIM itself.
      await Promise.all([dmarcModule(), dkimVerifyModule()]);
    },
    message(): CheckState {
      return {
        async data(c: DataContext) {
          if (c.get("dmarcDisableVerify")) {
            c.log("DMARC verification disabled for this message");
            return;
          }
          const resolver = mailauthResolver(c.resolver);
          const dkim = c.get("dkim") ?? await verifyDkim(c.content, resolver);
          const o = await evaluateDmarc(
            { headerFrom: dkim.headerFrom, fromFields: dkim.fromFields, spf: c.get("spf"), dkim },
            resolver,
            options.random,
          );
          c.set("dmarc", o);
          c.log(`DMARC ${o.status} for ${o.fromDomain || "(no From domain)"}: ${o.statusText}`);
          await options.record?.(o, c);
          const details = { authResults: [o.arHeader] };
          const wanted: VerdictAction = o.status === "reject"
            ? options.actions?.reject ?? "reject"
            : o.status === "quarantine"
            ? options.actions?.quarantine ?? (canQuarantine ? "quarantine" : "accept")
            : o.status === "temperror"
            ? options.actions?.temperror ?? "defer"
            : "accept";
          const verdict: Verdict = wanted === "accept"
            ? accept(details)
            : wanted === "defer"
            ? { action: "defer", reason: o.statusText, enhanced: "4.7.1", ...details }
            : wanted === "reject"
            ? {
              action: "reject",
              reason: `Rejected by the DMARC policy of ${o.fromDomain}`,
              enhanced: "5.7.1",
              ...details,
            }
            : { action: "quarantine", reason: o.statusText, ...details };
          if (reports && ["accept", "reject", "quarantine", "none"].includes(o.status)) {
            const entry = historyEntry(o, c, dkim, verdict.action);
            reports.record(entry);
            if (o.result !== "pass") {
              await reports.failure(entry, c.content, {
                forced: c.get("dmarcEnableForensic") === true,
                authResults: `${authservId}; ${o.arHeader}`,
              });
            }
          }
          return verdict;
        },
      };
    },
  };
}
