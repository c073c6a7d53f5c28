/**
 * Retry rules in Exim's sense (Exim spec chapter "Retry configuration", F and G rules): after a temporary
 * failure, retry at fixed or geometrically growing intervals, each rule holding until a cutoff measured
 * from the first failure; past the last cutoff the message times out. Trusts its config (validated here).
 */

import { HostList, type HostListSpec } from "../core/host_list.ts";
import { parseDuration } from "../core/units.ts";

/** One rule as written in config: `{ every: "1h", factor: 1.5, until: "16h" }`. */
export interface RetryRuleSpec {
  /** Interval between attempts; for a geometric rule, the first interval. */
  every: string | number;
  /** Multiply the previous interval by this for each attempt (geometric rule); absent means fixed. */
  factor?: number;
  /** The rule holds until this long after the first failure. */
  until: string | number;
}

/** Rules for the domains a host list matches (first matching entry wins). */
export interface RetryConfigEntry {
  domains: HostListSpec;
  rules: RetryRuleSpec[];
}

/** A validated rule, durations in milliseconds. */
export interface RetryRule {
  every: number;
  /** 1 for a fixed rule. */
  factor: number;
  until: number;
}

/** When to try again, or that retrying is over. */
export type RetryDecision = { at: number } | { giveUp: true };

/** Parses and checks rules: positive intervals, factor ≥ 1, cutoffs strictly increasing. Throws RangeError. */
export function parseRetryRules(specs: readonly (RetryRuleSpec | RetryRule)[]): RetryRule[] {
  let previous = 0;
  return specs.map((spec, i) => {
    const every = parseDuration(spec.every);
    const until = parseDuration(spec.until);
    const factor = spec.factor ?? 1;
    if (every <= 0) throw new RangeError(`Retry rule ${i}: "every" must be more than zero`);
    if (!Number.isFinite(factor) || factor < 1) {
      throw new RangeError(`Retry rule ${i}: "factor" must be 1 or more`);
    }
    if (until <= previous) {
      throw new RangeError(`Retry rule ${i}: "until" must be later than the rule before`);
    }
    previous = until;
    return { every, factor, until };
  });
}

/**
 * Decides the next attempt after a failure at `lastAttempt` (all times in ms since epoch). The rule in force
 * is the first whose `until` (from `firstFailure`) has not passed at `lastAttempt`; none left → give up.
 * A fixed rule waits `every`; a geometric rule waits `lastInterval × factor`, or `every` when there is no
 * last interval or it is shorter than `every` (so a geometric rule starts from `every`, as Exim's G rule does). The last attempt is pulled in to the final cutoff, so a message
 * gets one try at its deadline rather than one long after it. With no rules, give up at once.
 */
export function nextRetry(
  rules: readonly (RetryRuleSpec | RetryRule)[],
  firstFailure: number,
  lastAttempt: number,
  lastInterval?: number,
): RetryDecision {
  const parsed = parseRetryRules(rules);
  if (parsed.length === 0) return { giveUp: true };
  const elapsed = Math.max(0, lastAttempt - firstFailure);
  const rule = parsed.find((r) => elapsed < r.until);
  if (!rule) return { giveUp: true };
  const grows = rule.factor > 1 && lastInterval !== undefined && lastInterval >= rule.every;
  const interval = grows ? lastInterval * rule.factor : rule.every;
  const cutoff = firstFailure + parsed[parsed.length - 1].until;
  return { at: Math.min(lastAttempt + interval, cutoff) };
}

/** Compiles the config's retry entries once; the result finds a domain's rules (first matching entry wins). */
export function compileRetryConfig(
  config: readonly RetryConfigEntry[],
  opts: { timeoutMs?: number } = {},
): (domain: string) => Promise<RetryRule[] | undefined> {
  const entries = config.map((e, i) => ({
    domains: new HostList(e.domains, { name: `retry[${i}].domains`, timeoutMs: opts.timeoutMs }),
    rules: parseRetryRules(e.rules),
  }));
  return async function retryRulesFor(domain) {
    for (const e of entries) if (await e.domains.match({ name: domain })) return e.rules;
    return undefined;
  };
}
