/**
 * DCC through dccifd as a check (Exim's experimental `dcc` condition): the message is sent to dccifd after
 * DATA with the client, HELO, sender and every recipient. Exim's mapping of the overall result: A and S
 * accept, R and G fail, T defers (accepted instead with `deferOk`, Exim's `defer_ok`); what a failure
 * does is configured (`fail`: defer, as Exim's usual `defer !dcc = *` greylisting, or reject). With PRDR each
 * recipient gets the answer dccifd gave for it (A accept, R the `fail` verdict, G defer). The X-DCC header
 * dccifd returns is added to the message when it starts with `X-DCC`, as `dcc_direct_add_header` does.
 */

import type { Check, CheckState, Verdict } from "../check.ts";
import { accept, defer, reject } from "../check.ts";
import type { DataContext, PrdrContext } from "../context.ts";
import { optionDuration } from "../../core/units.ts";
import { errorMessage } from "../../core/error_message.ts";
import {
  DccifdClient,
  dccOutcome,
  type DccOverall,
  type DccRecipientResult,
  type DccResult,
} from "../dccifd_client.ts";

/** What the check keeps (`c.get("dcc")`): Exim's `$dcc_result` and `$dcc_header`, per recipient too. */
export interface DccOutcomeVars {
  result: DccOverall;
  recipients: Record<string, DccRecipientResult>;
  header?: string;
}

declare module "../variables.ts" {
  interface VariableMap {
    dcc: DccOutcomeVars;
  }
}

/** Options of `dcc()`. */
export interface DccOptions {
  /** dccifd's unix socket (default `/var/dcc/dccifd`) or `host port` / `host:port` for TCP */
  address?: string;
  /** The options line (default `["header"]`) */
  options?: string[];
  /** Deadline of one check (default "10s") */
  timeout?: string | number;
  /** A T result, or dccifd down or late: accept instead of 451 4.3.0 (Exim's defer_ok) */
  deferOk?: boolean;
  /** What a failing result (R, G) does: `defer` (451 4.7.1, default) or `reject` (550 5.7.1) */
  fail?: "defer" | "reject";
  /** Add dccifd's X-DCC header (default true) */
  header?: boolean;
}

/** Creates the DCC check. */
export function dcc(opts: DccOptions = {}): Check {
  const client = new DccifdClient({
    address: opts.address ?? "/var/dcc/dccifd",
    timeoutMs: optionDuration("dcc", "timeout", opts.timeout ?? "10s", { timer: true }),
  });
  const failVerdict = (text: string): Verdict =>
    opts.fail === "reject"
      ? reject(text, { code: 550, enhanced: "5.7.1" })
      : defer(`${text}, try again later`, { code: 451, enhanced: "4.7.1" });

  return {
    name: "dcc",
    message(): CheckState {
      let asked: Promise<DccResult | string> | undefined;
      let headerAdded = false;

      function ask(c: DataContext): Promise<DccResult | string> {
        asked ??= client.check({
          options: opts.options,
          ip: c.client.ip,
          hostname: c.client.name,
          helo: c.helo,
          sender: c.sender,
          recipients: c.recipients.map((r) => r.address),
          message: c.content,
        }, { signal: c.signal }).then((r) => {
          c.set("dcc", {
            result: r.overall,
            recipients: Object.fromEntries(c.recipients.map((rc, i) => [rc.address, r.recipients[i]])),
            header: r.header ? `${r.header[0]}: ${r.header[1]}` : undefined,
          });
          c.log(
            `dcc: ${r.overall} ${r.recipients.join("")}${r.header ? ` ${r.header[0]}: ${r.header[1]}` : ""}`,
          );
          return r;
        }, (err) => errorMessage(err));
        return asked;
      }

      function addHeader(c: DataContext, r: DccResult): void {
        if (headerAdded || opts.header === false || !r.header) return;
        headerAdded = true;
        c.addHeader(r.header[0], r.header[1]);
      }

      function unavailable(c: DataContext, why: string): Verdict | undefined {
        c.log(`dcc failed: ${why}${opts.deferOk ? " (deferOk: accepted)" : ""}`);
        if (opts.deferOk) return undefined;
        return defer("Temporary local problem, please try again later", { code: 451, enhanced: "4.3.0" });
      }

      return {
        async prdr(c: PrdrContext) {
          const r = await ask(c);
          if (typeof r === "string") return unavailable(c, r);
          if (r.overall === "T") return opts.deferOk ? accept() : unavailable(c, "dccifd answered T");
          const i = c.recipients.findIndex((x) => x.address === c.recipient.address);
          const mine = r.recipients[i] ?? "A";
          if (mine === "R") return failVerdict("Rejected by DCC");
          if (mine === "G") {
            return defer("Greylisted by DCC, try again later", { code: 451, enhanced: "4.7.1" });
          }
          return accept();
        },

        async data(c: DataContext) {
          // After PRDR dccifd was asked already: only the header remains to be added.
          const r = c.prdrChecked && asked ? await asked : await ask(c);
          if (typeof r === "string") return c.prdrChecked ? undefined : unavailable(c, r);
          if (c.prdrChecked) {
            addHeader(c, r);
            return undefined;
          }
          const outcome = dccOutcome(r.overall);
          if (outcome === "defer") {
            if (!opts.deferOk) return unavailable(c, "dccifd answered T");
          } else if (outcome === "fail") {
            return failVerdict(r.overall === "G" ? "Greylisted by DCC" : "Rejected by DCC");
          }
          addHeader(c, r);
          return accept();
        },
      };
    },
  };
}
