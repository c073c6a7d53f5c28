/**
 * The `queue` command line for operators on the same machine (Exim's -bp/-M/-Mg/-Mrm/-qff, Postfix's
 * mailq/postqueue -f/postsuper -h -H -d): `deno task queue list --state deferred`, `… hold ID…`. It talks
 * to the running Ferry through `<spool.dir>/control.sock`; when no Ferry runs it opens the spool itself
 * (taking its lock, so the two never write at once). Human output by default, `--json` for scripts.
 * Exit codes: 0 done, 1 some operation refused, 64 usage, 75 spool busy, 78 configuration.
 */

import { ConfigError, loadConfigFile } from "./config/load.ts";
import { parseDuration } from "./core/units.ts";
import { errorMessage } from "./core/error_message.ts";
import type { QueueQuery, QueueRow, QueueSummary } from "./spool/spool.ts";
import { SpoolLockedError } from "./spool/spool.ts";
import { SqliteSpool } from "./spool/sqlite_spool.ts";
import { callQueueControl, type ControlRequest, runControlRequest } from "./outbound/queue_control.ts";
import { isQueueState, type MessageDetails, type OpOutcome, QueueOps } from "./outbound/queue_ops.ts";

const USAGE = `usage: deno task queue [--config FILE | --spool DIR] [--json] COMMAND
  list [--state S] [--sender A] [--recipient A] [--domain D] [--older-than DUR] [--newer-than DUR]
       [--limit N] [--after ID]      list messages (oldest first, paged)
  summary                            counts by state and by destination domain
  show ID                            envelope, recipients, history, headers
  hold ID…                           park (not delivered until released)
  release ID…                        back to the queue
  retry ID…                          due now, ignoring back-off
  flush [DOMAIN]                     everything (or one domain) due now
  bounce ID…                         fail pending recipients, send the failure report
  delete ID…                         remove without any report`;

/** Parsed command line. */
interface Args {
  config?: string;
  spool?: string;
  json: boolean;
  command: string;
  rest: string[];
  flags: Record<string, string>;
}

class UsageError extends Error {}

function parseArgs(argv: string[]): Args {
  const args: Args = { json: false, command: "", rest: [], flags: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === "--json") args.json = true;
    else if (a === "--config" || a === "-c") args.config = value();
    else if (a === "--spool") args.spool = value();
    else if (a === "--help" || a === "-h") args.command = "help";
    else if (a.startsWith("--")) args.flags[a.slice(2)] = value();
    else if (args.command === "") args.command = a;
    else args.rest.push(a);
  }
  return args;
}

function queryOf(flags: Record<string, string>, now: number): QueueQuery {
  const q: QueueQuery = {};
  for (const [k, v] of Object.entries(flags)) {
    if (k === "state") {
      if (!isQueueState(v)) {
        throw new UsageError(`--state: expected incoming, active, deferred, hold or corrupt`);
      }
      q.state = v;
    } else if (k === "sender") q.sender = v === "<>" ? "" : v;
    else if (k === "recipient") q.recipient = v;
    else if (k === "domain") q.domain = v;
    else if (k === "older-than") q.receivedBefore = now - parseDuration(v);
    else if (k === "newer-than") q.receivedAfter = now - parseDuration(v);
    else if (k === "limit") q.limit = Number(v);
    else if (k === "after") q.after = v;
    else throw new UsageError(`unknown option --${k}`);
  }
  return q;
}

function requestOf(args: Args): ControlRequest {
  const ids = () => {
    if (args.rest.length === 0) throw new UsageError(`${args.command} needs at least one message id`);
    return args.rest;
  };
  switch (args.command) {
    case "list":
      return { op: "list", query: queryOf(args.flags, Date.now()) };
    case "summary":
      return { op: "summary" };
    case "show":
      if (args.rest.length !== 1) throw new UsageError("show needs one message id");
      return { op: "show", id: args.rest[0] };
    case "hold":
    case "release":
    case "retry":
    case "bounce":
    case "delete":
      return { op: args.command, ids: ids() };
    case "flush":
      return { op: "flush", domain: args.rest[0] };
    default:
      throw new UsageError(args.command ? `unknown command "${args.command}"` : "no command given");
  }
}

function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function when(t: number | undefined, now: number): string {
  if (t === undefined) return "-";
  return t <= now ? "now" : `in ${age(t - now)}`;
}

/** Human text for a result. */
function human(req: ControlRequest, result: unknown, now: number): string {
  switch (req.op) {
    case "list": {
      const rows = result as QueueRow[];
      if (rows.length === 0) return "queue is empty (for this filter)";
      const lines = rows.map((r) =>
        `${r.id.padEnd(23)} ${r.state.padEnd(8)} ${age(now - r.receivedAt).padStart(4)} ` +
        `${String(r.size).padStart(9)}  <${r.sender}>  ${r.pending}/${r.recipients} pending, next ${
          when(r.nextAttempt, now)
        }${r.reason ? `  (${r.reason})` : ""}`
      );
      const more = rows.length >= (req.query?.limit ?? 100) ? `\n(more: --after ${rows.at(-1)!.id})` : "";
      return `${"ID".padEnd(23)} ${"STATE".padEnd(8)} ${"AGE".padStart(4)} ${"SIZE".padStart(9)}  SENDER\n` +
        lines.join("\n") + more;
    }
    case "summary": {
      const s = result as QueueSummary;
      const states = Object.entries(s.byState).map(([k, v]) => `${k} ${v}`).join(", ");
      const domains = s.byDomain.map((d) =>
        `  ${d.domain.padEnd(40)} ${d.messages} message(s), ${d.recipients} recipient(s)`
      );
      return `by state: ${states}\npending by domain:\n${domains.join("\n") || "  (none)"}`;
    }
    case "show": {
      const d = result as MessageDetails | null;
      if (d === null) return "no such message";
      const e = d.envelope;
      const out = [
        `${e.id} ${d.row.state}${d.row.reason ? ` (${d.row.reason})` : ""}, received ${
          new Date(e.receivedAt).toISOString()
        } from [${e.client.ip}], ${d.row.size} octets`,
        `sender <${e.sender}>`,
        ...e.recipients.map((r) =>
          `  ${r.status.padEnd(9)} <${r.address}> attempts ${r.attempts ?? 0}` +
          (r.status === "pending" ? `, next ${when(r.nextAttempt ?? e.receivedAt, now)}` : "") +
          (r.lastError ? `, last: ${r.lastError}` : "")
        ),
        "history:",
        ...(d.history.length
          ? d.history.map((h) => `  ${new Date(h.at).toISOString()} ${h.text}`)
          : ["  (none)"]),
        "headers:",
        d.headers ?? `  (unreadable: ${d.headersError})`,
      ];
      return out.join("\n");
    }
    case "flush":
      return `${(result as { messages: number }).messages} message(s) due now`;
    default:
      return (result as OpOutcome[]).map((o) => `${o.id}: ${o.ok ? "" : "not done: "}${o.message}`).join(
        "\n",
      );
  }
}

async function spoolTarget(args: Args): Promise<{ dir: string; hostname: string }> {
  if (args.spool) return { dir: args.spool, hostname: Deno.hostname() };
  const config = await loadConfigFile(args.config ?? "./config.ts");
  return { dir: config.spool.dir, hostname: config.hostname ?? Deno.hostname() };
}

/** Runs the command line; returns the exit code. */
export async function queueMain(argv: string[]): Promise<number> {
  let args: Args;
  let req: ControlRequest;
  try {
    args = parseArgs(argv);
    if (args.command === "help") {
      console.log(USAGE);
      return 0;
    }
    req = requestOf(args);
  } catch (err) {
    if (err instanceof UsageError || err instanceof RangeError) {
      console.error(`queue: ${err.message}\n${USAGE}`);
      return 64;
    }
    throw err;
  }
  try {
    const { dir, hostname } = await spoolTarget(args);
    let result: unknown;
    const remote = await callQueueControl(dir, req);
    if (remote !== undefined) {
      if (!remote.ok) throw new Error(remote.error);
      result = remote.result;
    } else {
      // No Ferry answers: work on the spool directly (its lock keeps a starting Ferry out meanwhile).
      const spool = new SqliteSpool({ dir, thread: "main" });
      await spool.open();
      try {
        result = await runControlRequest(new QueueOps({ spool, hostname }), req);
      } finally {
        await spool.close();
      }
    }
    console.log(args.json ? JSON.stringify(result, null, 2) : human(req, result, Date.now()));
    const refused = Array.isArray(result) && req.op !== "list" && result.some((o: OpOutcome) => !o.ok);
    return refused || (req.op === "show" && result === null) ? 1 : 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) console.error(`config: ${p}`);
      return 78;
    }
    if (err instanceof SpoolLockedError) {
      console.error(`queue: ${err.message}, but its control socket does not answer`);
      return 75;
    }
    console.error(`queue: ${errorMessage(err)}`);
    return 70;
  }
}

if (import.meta.main) Deno.exit(await queueMain(Deno.args));
