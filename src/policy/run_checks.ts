/**
 * Turns check methods into stage steps: each runs one check's method for the stage and applies its verdict —
 * reject/defer throw SmtpError, quarantine marks the message or the recipient, and Authentication-Results
 * fragments and header fields are collected for the data stage.
 */

import type { Middleware } from "../core/compose.ts";
import { SmtpError } from "../core/reply.ts";
import type { CheckResult, Verdict } from "./check.ts";
import type { BaseContext } from "./context.ts";

/** Where verdicts leave what they carry (one per connection, one per message). */
export class VerdictSink {
  /** Authentication-Results method results, in the order given */
  readonly authResults: string[] = [];
  /** Header fields to add when the message is stored */
  readonly headers: { name: string; value: string }[] = [];
  /** Why the whole message is quarantined */
  quarantine?: string;
  /** Quarantined recipients and why */
  readonly quarantinedRecipients = new Map<string, string>();
}

/** How verdicts are applied at one stage. */
export interface ApplyOptions {
  sink: VerdictSink;
  /** False when no quarantine is configured: a quarantine verdict then defers (451 4.7.1) */
  canQuarantine: boolean;
  /** Set at rcpt and prdr: a quarantine verdict then holds this recipient only */
  recipient?: string;
  /** Told every verdict (metrics): the check's name, the stage and the action */
  onVerdict?: (check: string, stage: string, action: string) => void;
}

/** Applies one verdict; throws SmtpError for reject and defer (and for quarantine without a quarantine). */
export function applyVerdict(name: string, v: Verdict, c: BaseContext, opts: ApplyOptions): void {
  const { sink } = opts;
  opts.onVerdict?.(name, c.stage, v.action);
  if (v.authResults) sink.authResults.push(...v.authResults);
  if (v.headers) sink.headers.push(...v.headers);
  switch (v.action) {
    case "accept":
      return;
    case "reject":
      c.log(`check ${name} rejected: ${v.reason ?? "no reason given"}`);
      throw new SmtpError(v.code ?? 550, v.enhanced ?? "5.7.1", v.reason ?? "Rejected by policy");
    case "defer":
      c.log(`check ${name} deferred: ${v.reason ?? "no reason given"}`);
      throw new SmtpError(
        v.code ?? 451,
        v.enhanced ?? "4.7.1",
        v.reason ?? "Temporarily rejected by policy, try again later",
      );
    case "quarantine": {
      const reason = v.reason ?? `quarantined by ${name}`;
      if (!opts.canQuarantine) {
        c.log(`check ${name} asked for quarantine (${reason}) but none is configured: deferred`);
        throw new SmtpError(451, "4.7.1", "Temporarily rejected by policy, try again later");
      }
      const only = opts.recipient !== undefined ? [opts.recipient] : v.recipients;
      c.log(
        `check ${name} quarantined ${only ? only.map((r) => `<${r}>`).join(", ") : "the message"}: ${reason}`,
      );
      if (only) { for (const r of only) sink.quarantinedRecipients.set(r, reason); }
      else sink.quarantine ??= reason;
      return;
    }
    default:
      throw new TypeError(`check ${name} returned an unknown verdict ${JSON.stringify(v.action)}`);
  }
}

/** One named step per method: runs it, applies its verdict, then goes on with the chain. */
export function checkSteps<C extends BaseContext>(
  methods: readonly { name: string; run: (c: C) => CheckResult }[],
  opts: (c: C) => ApplyOptions,
): Middleware<C>[] {
  return methods.map(({ name, run }) => {
    const step = async (c: C, next: () => Promise<void>) => {
      const v = await run(c);
      if (v) applyVerdict(name, v, c, opts(c));
      await next();
    };
    Object.defineProperty(step, "name", { value: `check ${name}` });
    return step;
  });
}
