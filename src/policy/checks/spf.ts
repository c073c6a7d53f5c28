/**
 * SPF (RFC 7208) as a check: the MAIL FROM identity (the null sender as `postmaster@HELO`, 2.4) is evaluated
 * at MAIL by mailauth in strict mode over Ferry's resolver, with the RFC's limits (10 DNS-querying terms, 2
 * void lookups, 4.6.4). The result is kept as `c.get("spf")` with the content of Exim's `$spf_*` variables,
 * a `Received-SPF:` field is added (9.1) and `spf=…` goes into Authentication-Results. What a result does is
 * configured (`actions`). With `guess: true` (Exim's `spf_guess`) a domain without a record is evaluated
 * as `v=spf1 a/24 mx/24 ptr ?all` and labelled a guess (`X-SPF-Guess:`), never as SPF.
 * SECURITY: the record's explanation (exp=) is third-party text; it is only put in the SMTP reply.
 */

import type { Check, CheckState, Verdict, VerdictAction } from "../check.ts";
import { accept } from "../check.ts";
import type { MailContext } from "../context.ts";
import { type MailauthResolver, mailauthResolver } from "./_mailauth_dns.ts";
import { spfModule } from "./_mailauth.ts";

/** The SPF results of RFC 7208 2.6. */
export type SpfResultName = "pass" | "fail" | "softfail" | "neutral" | "none" | "permerror" | "temperror";

/** What the check keeps (`c.get("spf")`), named after Exim's variables. */
export interface SpfOutcome {
  /** `$spf_result` */
  result: SpfResultName;
  /** True when the result came from the guess record (`$spf_result_guessed`) */
  guessed: boolean;
  /** The domain checked (MAIL FROM's, or HELO's for the null sender) */
  domain: string;
  /** "mailfrom", or "helo" for the null sender */
  identity: "mailfrom" | "helo";
  /** `$spf_header_comment`: why, for the header comment */
  headerComment: string;
  /** `$spf_smtp_comment`: text for an SMTP reply (the domain's explanation for fail, when it has one) */
  smtpComment: string;
  /** `$spf_received`: the whole `Received-SPF:` (or `X-SPF-Guess:`) field */
  received: string;
  /** The record evaluated, when one was found */
  record?: string;
}

declare module "../variables.ts" {
  interface VariableMap {
    spf: SpfOutcome;
  }
}

/** What a result does. */
export type SpfAction = Exclude<VerdictAction, never>;

/** Options of `spf()`. */
export interface SpfOptions {
  /** Verdict per result (default: fail → reject 550 5.7.23, temperror → defer 451 4.7.24, others accept) */
  actions?: Partial<Record<SpfResultName, SpfAction>>;
  /** Evaluate `v=spf1 a/24 mx/24 ptr ?all` where a domain has no SPF record (Exim's spf_guess) */
  guess?: boolean;
  /** The guess record (default `v=spf1 a/24 mx/24 ptr ?all`) */
  guessRecord?: string;
  /** Limit on DNS-querying terms (RFC 7208 4.6.4; default 10) */
  maxLookups?: number;
  /** Limit on void lookups (default 2) */
  maxVoidLookups?: number;
}

const DEFAULT_ACTIONS: Record<SpfResultName, SpfAction> = {
  pass: "accept",
  fail: "reject",
  softfail: "accept",
  neutral: "accept",
  none: "accept",
  permerror: "accept",
  temperror: "defer",
};

const RESULTS = new Set<string>(["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]);

/** A resolver that answers the guess record for `domain`'s TXT when it has no SPF record. */
function guessingResolver(inner: MailauthResolver, domain: string, record: string): MailauthResolver {
  return async (name, type) => {
    if (type.toUpperCase() !== "TXT" || name.toLowerCase().replace(/\.$/, "") !== domain) {
      return await inner(name, type);
    }
    let txt: string[][] = [];
    try {
      txt = await inner(name, type) as string[][];
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== "ENOTFOUND" && code !== "ENODATA") throw err;
    }
    const hasSpf = txt.some((r) => /^v=spf1( |$)/i.test(r.join("")));
    return hasSpf ? txt : [...txt, [record]];
  };
}

/** Evaluates SPF for one client (exported for the RFC 7208 suite and tools; the check calls it). */
export async function evaluateSpf(
  input: { ip: string; sender: string; helo: string; hostname: string },
  resolver: MailauthResolver,
  opts: SpfOptions = {},
): Promise<SpfOutcome> {
  const { spf: mailauthSpf } = await spfModule();
  const run = (r: MailauthResolver) =>
    mailauthSpf({
      sender: input.sender,
      ip: input.ip,
      helo: input.helo,
      mta: input.hostname,
      resolver: r,
      strict: true,
      maxResolveCount: opts.maxLookups,
      maxVoidCount: opts.maxVoidLookups,
    });
  let res = await run(resolver);
  let guessed = false;
  const domain = String(res.domain ?? "");
  if (opts.guess && res.status?.result === "none" && domain && domain !== "-" && !res.rr) {
    res = await run(
      guessingResolver(resolver, domain.toLowerCase(), opts.guessRecord ?? "v=spf1 a/24 mx/24 ptr ?all"),
    );
    guessed = true;
  }
  const name = String(res.status?.result ?? "temperror").toLowerCase();
  const result = (RESULTS.has(name) ? name : "temperror") as SpfResultName;
  const headerComment = String(res.status?.comment || `${input.hostname}: SPF ${result}`);
  const explanation = (res as { explanation?: string }).explanation;
  const smtpComment = result === "fail" && explanation
    ? explanation.replace(/[^\x20-\x7e]/g, "?")
    : `SPF ${result} for ${domain} from ${input.ip}`;
  let received = String(res.header ?? `Received-SPF: ${result} (${headerComment})`);
  if (guessed) received = received.replace(/^Received-SPF:/, "X-SPF-Guess:");
  return {
    result,
    guessed,
    domain,
    identity: input.sender ? "mailfrom" : "helo",
    headerComment,
    smtpComment,
    received,
    record: typeof res.rr === "string" ? res.rr : undefined,
  };
}

function verdictFor(
  o: SpfOutcome,
  action: SpfAction,
  authResult: string,
  header: Verdict["headers"],
): Verdict {
  const details = { authResults: [authResult], headers: header };
  switch (action) {
    case "accept":
      return accept(details);
    case "reject":
      return {
        action,
        reason: o.result === "fail"
          ? `SPF check failed: ${o.smtpComment}`
          : `SPF ${o.result}: ${o.smtpComment}`,
        code: 550,
        enhanced: o.result === "permerror" ? "5.7.24" : "5.7.23",
        ...details,
      };
    case "defer":
      return {
        action,
        reason: `SPF ${o.result}: try again later`,
        code: 451,
        enhanced: "4.7.24",
        ...details,
      };
    case "quarantine":
      return { action, reason: `SPF ${o.result}`, ...details };
  }
}

/** Splits a header line `Name: value` into name and value (the value may be folded). */
function field(line: string): { name: string; value: string } {
  const colon = line.indexOf(":");
  return { name: line.slice(0, colon), value: line.slice(colon + 1).replace(/^ /, "") };
}

/** The SPF check (RFC 7208) for `checks: [spf()]`. */
export function spf(options: SpfOptions = {}): Check {
  const actions = { ...DEFAULT_ACTIONS, ...options.actions };
  let hostname = "localhost";
  return {
    name: "spf",
    async open(services) {
      hostname = services.hostname;
      await spfModule();
    },
    message(): CheckState {
      return {
        async mail(c: MailContext) {
          const o = await evaluateSpf(
            { ip: c.client.ip, sender: c.sender, helo: c.helo ?? "", hostname },
            mailauthResolver(c.resolver),
            options,
          );
          c.set("spf", o);
          c.log(
            `SPF ${o.guessed ? "guess " : ""}${o.result} for ${o.identity} ${o.domain}: ${o.headerComment}`,
          );
          // A guess is never reported as SPF (Exim's spf_guess): its own header, a neutral A-R comment.
          const auth = o.guessed
            ? `spf=none (guess: ${o.result}) smtp.${o.identity}=${o.domain}`
            : `spf=${o.result} (${o.headerComment.replace(/[()\\]/g, "")}) smtp.${o.identity}=${o.domain}`;
          return verdictFor(o, o.guessed ? "accept" : actions[o.result], auth, [field(o.received)]);
        },
      };
    },
  };
}
