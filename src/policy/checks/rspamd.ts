/**
 * Per-recipient content verdicts from rspamd (the role Brightmail plays in Exim's experimental spec):
 * recipients with the same `settingsId` are scanned together over /checkv2 and each recipient gets its
 * verdict. With PRDR each recipient gets its own reply; without PRDR the message is accepted once and each
 * recipient is delivered, delivered to the quarantine route (Brightmail's alternate route), or not delivered.
 * Actions map to verdicts: reject → reject, soft reject and greylist → 451, add header and rewrite subject →
 * deliver with rspamd's header edits (`milter.add_headers`/`remove_headers`, the new Subject), no action →
 * deliver; `quarantine` names the actions that go to the quarantine route instead. rspamd down or late →
 * 451 4.3.0, or deliver when `failOpen`.
 */

import type { Check, CheckState, Verdict } from "../check.ts";
import { accept, defer, quarantine, reject } from "../check.ts";
import type { DataContext, PolicyRecipient, PrdrContext } from "../context.ts";
import { optionDuration } from "../../core/units.ts";
import { errorMessage } from "../../core/error_message.ts";
import { type RspamdAction, RspamdClient, type RspamdResult } from "../rspamd_client.ts";

/** What happens to one recipient. */
export type RspamdVerdict = "deliver" | "quarantine" | "reject" | "defer";

/** One recipient's result, kept in `c.get("rspamd")` and saved with the message. */
export interface RspamdRecipientResult {
  verdict: RspamdVerdict;
  action: RspamdAction | "failed";
  score: number;
  requiredScore: number;
  symbols: string[];
  settingsId?: string;
}

declare module "../variables.ts" {
  interface VariableMap {
    /** Per recipient address */
    rspamd: Record<string, RspamdRecipientResult>;
  }
}

/** Options of `rspamd()`. */
export interface RspamdOptions {
  /** The normal worker's URL (default `http://127.0.0.1:11333`) */
  url?: string;
  /** Deadline of one scan (default "20s") */
  timeout?: string | number;
  /** rspamd down, late or failing: deliver instead of 451 4.3.0 (default false) */
  failOpen?: boolean;
  /** The rspamd settings per recipient (`Settings-ID`), e.g. from a Redis lookup; undefined: rspamd's default */
  settingsId?: (
    recipient: PolicyRecipient,
    c: DataContext,
  ) => string | undefined | Promise<string | undefined>;
  /** Actions whose recipients go to the quarantine route (`quarantine.route`) instead (default none) */
  quarantine?: RspamdAction[];
  /** Apply rspamd's header edits and subject rewrite (default true) */
  headers?: boolean;
}

type Scan = { result?: RspamdResult; error?: string; settingsId?: string };

function verdictOf(action: RspamdAction, quarantined: readonly RspamdAction[]): RspamdVerdict {
  if (quarantined.includes(action)) return "quarantine";
  if (action === "reject") return "reject";
  if (action === "soft reject" || action === "greylist") return "defer";
  return "deliver";
}

/** Creates the rspamd check. */
export function rspamd(opts: RspamdOptions = {}): Check {
  const client = new RspamdClient({
    url: opts.url ?? "http://127.0.0.1:11333",
    timeoutMs: optionDuration("rspamd", "timeout", opts.timeout ?? "20s", { timer: true }),
  });
  const quarantined = opts.quarantine ?? [];
  const headers = opts.headers ?? true;

  return {
    name: "rspamd",
    message(): CheckState {
      // One scan per settings id, shared by its recipients (PRDR asks recipient by recipient).
      let scans: Promise<Map<string, Scan>> | undefined;

      async function scanAll(c: DataContext): Promise<Map<string, Scan>> {
        const groups = new Map<string, { settingsId?: string; rcpts: string[] }>();
        const byRecipient = new Map<string, string>();
        for (const r of c.recipients) {
          const id = opts.settingsId ? await opts.settingsId(r, c) : undefined;
          const g = id ?? "\0default";
          if (!groups.has(g)) groups.set(g, { settingsId: id, rcpts: [] });
          groups.get(g)!.rcpts.push(r.address);
          byRecipient.set(r.address, g);
        }
        const results = new Map<string, Scan>();
        await Promise.all([...groups].map(async ([g, { settingsId, rcpts }]) => {
          try {
            const result = await client.check({
              ip: c.client.ip,
              helo: c.helo,
              hostname: c.client.name,
              from: c.sender,
              rcpt: rcpts,
              queueId: c.id,
              user: c.auth?.user,
              tls: c.tls ? { cipher: c.tls.cipher, version: c.tls.version } : undefined,
              settingsId,
              message: c.content,
            }, { signal: c.signal });
            c.log(
              `rspamd ${rcpts.join(",")}${settingsId ? ` settings=${settingsId}` : ""}: ${result.action} ` +
                `score=${result.score.toFixed(2)}/${result.requiredScore.toFixed(2)}`,
            );
            results.set(g, { result, settingsId });
          } catch (err) {
            results.set(g, { error: errorMessage(err), settingsId });
          }
        }));
        const perRecipient = new Map<string, Scan>();
        for (const [rcpt, g] of byRecipient) perRecipient.set(rcpt, results.get(g)!);
        return perRecipient;
      }

      function record(c: DataContext, address: string, scan: Scan, verdict: RspamdVerdict): void {
        const r = scan.result;
        const entry: RspamdRecipientResult = {
          verdict,
          action: r?.action ?? "failed",
          score: r?.score ?? 0,
          requiredScore: r?.requiredScore ?? 0,
          symbols: r ? Object.keys(r.symbols).sort() : [],
          settingsId: scan.settingsId,
        };
        c.set("rspamd", { ...(c.get("rspamd") ?? {}), [address]: entry });
      }

      function edit(c: DataContext, r: RspamdResult): void {
        if (!headers) return;
        for (const name of r.removeHeaders) c.removeHeader(name);
        for (const [name, value] of r.addHeaders) c.addHeader(name, value);
        if (r.subject !== undefined) c.replaceHeader("Subject", r.subject);
      }

      /** A failed scan: defer, or deliver when failOpen. */
      function failed(c: DataContext, address: string, scan: Scan): Verdict | undefined {
        c.log(
          `rspamd failed for <${address}>: ${scan.error}${opts.failOpen ? " (failOpen: delivered)" : ""}`,
        );
        record(c, address, scan, opts.failOpen ? "deliver" : "defer");
        if (opts.failOpen) return undefined;
        return defer("Temporary local problem, please try again later", { code: 451, enhanced: "4.3.0" });
      }

      return {
        // With PRDR: one reply per recipient.
        async prdr(c: PrdrContext) {
          scans ??= scanAll(c);
          const address = c.recipient.address;
          const scan = (await scans).get(address)!;
          if (!scan.result) return failed(c, address, scan);
          const verdict = verdictOf(scan.result.action, quarantined);
          record(c, address, scan, verdict);
          const text = scan.result.smtpMessage;
          if (verdict === "reject") return reject(text ?? "Message content rejected", { enhanced: "5.7.1" });
          if (verdict === "defer") return defer(text ?? "Try again later", { enhanced: "4.7.1" });
          // Header edits are made once, at the data stage, for the recipients that are left.
          if (verdict === "quarantine") return quarantine(`rspamd ${scan.result.action}`);
          return accept();
        },

        // Without PRDR (or after it): one reply for the message, outcomes per recipient.
        async data(c: DataContext) {
          if (c.prdrChecked) {
            const left = await scans;
            const kept = c.recipients.map((r) => left?.get(r.address)?.result).filter((r) => r !== undefined);
            if (kept.length) edit(c, kept.reduce((a, b) => (b.score > a.score ? b : a)));
            return undefined;
          }
          scans ??= scanAll(c);
          const all = await scans;
          const outcomes = c.recipients.map((r) => ({ address: r.address, scan: all.get(r.address)! }));
          for (const o of outcomes) if (!o.scan.result) return failed(c, o.address, o.scan);
          const verdicts = outcomes.map((o) => ({
            ...o,
            verdict: verdictOf(o.scan.result!.action, quarantined),
          }));
          for (const v of verdicts) record(c, v.address, v.scan, v.verdict);
          // One reply for everyone: a temporary verdict for any recipient defers the message.
          const deferred = verdicts.find((v) => v.verdict === "defer");
          if (deferred) {
            return defer(deferred.scan.result!.smtpMessage ?? "Try again later", { enhanced: "4.7.1" });
          }
          const kept = verdicts.filter((v) => v.verdict !== "reject");
          if (kept.length === 0) {
            return reject(verdicts[0].scan.result!.smtpMessage ?? "Message content rejected", {
              enhanced: "5.7.1",
            });
          }
          for (const v of verdicts) {
            if (v.verdict === "reject") {
              c.log(`rspamd: <${v.address}> not delivered (${v.scan.result!.action})`);
              c.rewriteRecipient(v.address, []);
            }
          }
          // The stored message is one copy: it carries the edits of the highest-scoring delivered group.
          const worst = kept.reduce((a, b) => (b.scan.result!.score > a.scan.result!.score ? b : a));
          edit(c, worst.scan.result!);
          const held = kept.filter((v) => v.verdict === "quarantine").map((v) => v.address);
          if (held.length) return quarantine("rspamd", { recipients: held });
          return accept();
        },
      };
    },
  };
}
