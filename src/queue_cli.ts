/**
 * The `queue` command line for operators (Exim's -bp/-M/-Mg/-Mrm/-qff, Postfix's mailq/postqueue -f/postsuper
 * -h -H -d): `deno task queue list --state deferred`, `… hold ID…`. It is a client of the admin API of the
 * running Ferry: the URL comes from `<spool.dir>/admin.url` (written by Ferry at start, removed at stop) and
 * the token from `admin.tokens` in the config or `<spool.dir>/admin.token`; `--url`/`--token` (or
 * FERRY_ADMIN_URL/FERRY_ADMIN_TOKEN) override both. With `--offline` it runs the same API in-process on the
 * spool of a stopped Ferry (taking the spool's lock, so the two never write at once). Human output by
 * default, `--json` prints the API's answer. Exit codes (sysexits.h): 0 done, 1 some operation refused or no
 * such message, 64 usage, 69 no Ferry answers, 70 internal error, 75 try again (`--offline` on a running
 * Ferry's spool, or Ferry still starting), 77 token refused, 78 configuration.
 */

import { ConfigError, loadConfigFile } from "./config/load.ts";
import type { ResolvedConfig } from "./config/schema.ts";
import { parseDuration } from "./core/units.ts";
import { errorMessage } from "./core/error_message.ts";
import type { QueueSummary } from "./spool/spool.ts";
import { QUEUE_STATES, SpoolLockedError } from "./spool/spool.ts";
import type { OpOutcome } from "./outbound/queue_ops.ts";
import { AdminApiError, AdminClient, AdminUnreachableError } from "./admin/client.ts";
import { readUrlFile, URL_FILE } from "./admin/url_file.ts";
import { tokenFilePath } from "./admin/token_file.ts";
import type { QueueListAnswer as ListAnswer, QueueShowAnswer as ShowAnswer } from "./admin/api_schemas.ts";
import { REASON_MAX } from "./admin/api_schemas.ts";
import { isQueueAction, type QueueAction } from "./admin/queue_access.ts";
import { type HttpsTransport, httpsTransport } from "./queue_https.ts";
import { openTlsLibrary } from "./tls_setup.ts";

/** The spool's lock file (sqlite_spool.ts), named here so the common path need not load the spool. */
const LOCK_FILE = "ferry.lock";

const USAGE =
  `usage: deno task queue [--config FILE | --spool DIR] [--url URL] [--token T] [--offline] [--json] COMMAND
  list [--state S] [--sender A] [--recipient A] [--domain D] [--older-than DUR] [--newer-than DUR]
       [--limit N] [--after ID]      list messages (oldest first, paged)
  summary                            counts by state and by destination domain
  show ID                            envelope, recipients, history, headers
  hold ID…                           park (not delivered until released)
  release ID…                        back to the queue
  retry ID…                          due now, ignoring back-off
  flush [DOMAIN]                     everything (or one domain) due now
  bounce [--reason TEXT] ID…         fail pending recipients, send the failure report
  delete ID…                         remove without any report
hold, release, retry, bounce and delete take --reason TEXT: Ferry logs it, and a bounce's failure report
gives it as the reason.
The running Ferry is found through <spool.dir>/admin.url and its admin token; --url and --token
(or FERRY_ADMIN_URL, FERRY_ADMIN_TOKEN) override. --offline works on a stopped Ferry's spool.`;

/** Parsed command line. */
interface Args {
  config?: string;
  spool?: string;
  url?: string;
  token?: string;
  ca?: string;
  offline: boolean;
  json: boolean;
  command: string;
  rest: string[];
  flags: Record<string, string>;
}

class UsageError extends Error {}

/** Why the command cannot reach a Ferry: exit 69 (EX_UNAVAILABLE) with this text. */
class UnavailableError extends Error {}

function parseArgs(argv: string[]): Args {
  const args: Args = { json: false, offline: false, command: "", rest: [], flags: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === "--json") args.json = true;
    else if (a === "--offline") args.offline = true;
    else if (a === "--config" || a === "-c") args.config = value();
    else if (a === "--spool") args.spool = value();
    else if (a === "--url") args.url = value();
    else if (a === "--token") args.token = value();
    else if (a === "--ca") args.ca = value();
    else if (a === "--help" || a === "-h") args.command = "help";
    else if (a.startsWith("--")) args.flags[a.slice(2)] = value();
    else if (args.command === "") args.command = a;
    else args.rest.push(a);
  }
  return args;
}

/** One API call the command makes. */
type Call =
  | { op: "list"; query: Record<string, string | number | undefined>; limit: number }
  | { op: "summary" }
  | { op: "show"; id: string }
  | { op: QueueAction; ids: string[]; reason?: string }
  | { op: "flush"; domain?: string };

const LIST_FLAGS: Record<string, string> = {
  state: "state",
  sender: "sender",
  recipient: "recipient",
  domain: "domain",
  "older-than": "olderThan",
  "newer-than": "newerThan",
  limit: "limit",
  after: "after",
};

function listCall(flags: Record<string, string>): Call {
  const query: Record<string, string> = {};
  for (const [k, v] of Object.entries(flags)) {
    const name = LIST_FLAGS[k];
    if (name === undefined) throw new UsageError(`unknown option --${k}`);
    if (k === "state" && !(QUEUE_STATES as readonly string[]).includes(v)) {
      throw new UsageError(`--state: expected incoming, active, deferred, hold or corrupt`);
    }
    if (k === "older-than" || k === "newer-than") parseDuration(v); // RangeError: a usage error
    if (k === "limit" && !/^[1-9][0-9]{0,3}$/.test(v)) throw new UsageError("--limit: expected 1 to 1000");
    query[name] = v;
  }
  return { op: "list", query, limit: Number(query.limit ?? 100) };
}

/** `--reason TEXT` of the actions on ids: what the admin API takes, as is (it logs it; a bounce reports it). */
function reasonOf(flags: Record<string, string>): string | undefined {
  const { reason, ...others } = flags;
  const unknown = Object.keys(others)[0];
  if (unknown !== undefined) throw new UsageError(`unknown option --${unknown}`);
  if (reason === undefined) return undefined;
  if (reason.trim() === "" || reason.length > REASON_MAX) {
    throw new UsageError(`--reason: expected 1 to ${REASON_MAX} characters`);
  }
  return reason;
}

function callOf(args: Args): Call {
  const ids = () => {
    if (args.rest.length === 0) throw new UsageError(`${args.command} needs at least one message id`);
    return args.rest;
  };
  if (isQueueAction(args.command)) return { op: args.command, ids: ids(), reason: reasonOf(args.flags) };
  if (args.command !== "list" && Object.keys(args.flags).length > 0) {
    throw new UsageError(`unknown option --${Object.keys(args.flags)[0]}`);
  }
  switch (args.command) {
    case "list":
      return listCall(args.flags);
    case "summary":
      return { op: "summary" };
    case "show":
      if (args.rest.length !== 1) throw new UsageError("show needs one message id");
      return { op: "show", id: args.rest[0] };
    case "flush":
      if (args.rest.length > 1) throw new UsageError("flush takes at most one domain");
      return { op: "flush", domain: args.rest[0] };
    default:
      throw new UsageError(args.command ? `unknown command "${args.command}"` : "no command given");
  }
}

/** The batch routes' answer (src/admin/routes/queue_batch.ts). */
interface ResultsAnswer {
  results: OpOutcome[];
}

/** Runs `call` through the API; a 404 of `show` is `null`. */
async function perform(client: AdminClient, call: Call): Promise<unknown> {
  switch (call.op) {
    case "list":
      return await client.get<ListAnswer>("/api/queue", call.query);
    case "summary":
      return await client.get<QueueSummary>("/api/queue/summary");
    case "show":
      try {
        return await client.get<ShowAnswer>(`/api/queue/${encodeURIComponent(call.id)}`);
      } catch (err) {
        if (err instanceof AdminApiError && err.status === 404) return null;
        throw err;
      }
    case "flush":
      return await client.post<{ messages: number }>(
        "/api/queue/flush",
        call.domain ? { domain: call.domain } : {},
      );
    default:
      return await client.post<ResultsAnswer>(`/api/queue/${call.op}`, {
        ids: call.ids,
        reason: call.reason,
      });
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

/** Human text for an answer. */
function human(call: Call, result: unknown, now: number): string {
  switch (call.op) {
    case "list": {
      const { messages: rows, next } = result as ListAnswer;
      if (rows.length === 0) return "queue is empty (for this filter)";
      const lines = rows.map((r) =>
        `${r.id.padEnd(23)} ${r.state.padEnd(8)} ${age(now - r.receivedAt).padStart(4)} ` +
        `${String(r.size).padStart(9)}  <${r.sender}>  ${r.pending}/${r.recipients.length} pending, next ${
          when(r.nextAttempt, now)
        }${r.reason ? `  (${r.reason})` : ""}`
      );
      const more = next ? `\n(more: --after ${next})` : "";
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
      const d = result as ShowAnswer | null;
      if (d === null) return "no such message";
      const e = d.envelope;
      const out = [
        `${e.id} ${d.message.state}${d.message.reason ? ` (${d.message.reason})` : ""}, received ${
          new Date(e.receivedAt).toISOString()
        } from [${e.client.ip}], ${d.message.size} octets`,
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
        d.headers ?? `  (unreadable: ${d.headersError ?? "not read"})`,
      ];
      return out.join("\n");
    }
    case "flush":
      return `${(result as { messages: number }).messages} message(s) due now`;
    default:
      return (result as ResultsAnswer).results.map((o) => `${o.id}: ${o.ok ? "" : "not done: "}${o.message}`)
        .join("\n");
  }
}

/** Where the command's spool and config are; the config only when it is needed or named. */
interface Target {
  dir?: string;
  config?: ResolvedConfig;
}

async function target(args: Args, needSpool: boolean): Promise<Target> {
  if (args.spool) return { dir: args.spool };
  if (!needSpool && args.config === undefined) return {};
  const config = await loadConfigFile(args.config ?? "./config.ts");
  return { dir: config.spool.dir, config };
}

/** Whether a process holds the spool's lock (a running Ferry, or a `--offline` command). */
function spoolLocked(dir: string): boolean {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(`${dir.replace(/\/+$/, "")}/${LOCK_FILE}`, { read: true, write: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  try {
    if (!file.tryLockSync(true)) return true;
    file.unlockSync();
    return false;
  } finally {
    file.close();
  }
}

async function readToken(dir: string): Promise<string | undefined> {
  try {
    const t = (await Deno.readTextFile(tokenFilePath(dir))).trim();
    return t === "" ? undefined : t;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/** A client of the running Ferry's admin API, found as the module comment says. */
async function remoteClient(
  args: Args,
): Promise<{ client: AdminClient; urlFileOf?: string; transport?: HttpsTransport }> {
  const env = (name: string) => Deno.env.get(name) || undefined;
  const givenUrl = args.url ?? env("FERRY_ADMIN_URL");
  const givenToken = args.token ?? env("FERRY_ADMIN_TOKEN");
  const { dir, config } = await target(args, givenUrl === undefined || givenToken === undefined);
  let url = givenUrl;
  const urlFileOf = url === undefined ? dir : undefined;
  if (url === undefined) {
    if (config && !config.admin.enable) {
      throw new UnavailableError(
        `the admin API is off in this configuration (admin.enable: false); the queue command talks to a ` +
          `running Ferry through it${
            spoolLocked(dir!) ? "" : " (no Ferry runs on this spool: try --offline)"
          }`,
      );
    }
    url = await readUrlFile(dir!);
    if (url === undefined) {
      throw new UnavailableError(
        spoolLocked(dir!)
          ? `a process holds the spool "${dir}" but has not published its admin API in ${dir}/${URL_FILE} ` +
            `(still starting, or its admin API is off); pass --url`
          : `no Ferry is running on the spool "${dir}" (no ${dir}/${URL_FILE}); start it, or use --offline ` +
            `to work on the stopped spool`,
      );
    }
  }
  let token = givenToken ?? config?.admin.tokens[0];
  if (token === undefined && dir !== undefined) token = await readToken(dir);
  if (token === undefined) {
    const where = [
      ...(config ? ["in admin.tokens"] : []),
      ...(dir ? [`in ${dir}/admin.token`] : []),
    ].join(" nor ");
    throw new UnavailableError(`no admin token${where ? `: none ${where}` : ""}; pass --token`);
  }
  // With a CA file, HTTPS goes over Ferry's own TLS client (it takes a self-signed admin.tls.cert, which
  // Deno's fetch refuses when the certificate says CA:TRUE); without one, fetch and the system store.
  const ca = args.ca ?? env("FERRY_ADMIN_CA") ?? config?.admin.tls?.cert;
  if (url.startsWith("https:") && ca !== undefined) {
    await Deno.stat(ca);
    if (config) openTlsLibrary(config);
    const transport = httpsTransport(ca);
    return { client: new AdminClient({ url, token, fetch: transport.fetch }), urlFileOf, transport };
  }
  return { client: new AdminClient({ url, token }), urlFileOf };
}

/** Runs `call` through the admin app in this process, on the spool of a stopped Ferry. */
async function offline(args: Args, call: Call): Promise<unknown> {
  const { dir, config } = await target(args, true);
  const hostname = config?.hostname ?? Deno.hostname();
  // Loaded only here: talking to a running Ferry needs none of this (and starts faster without it).
  const [
    { SqliteSpool },
    { QueueOps },
    { createAdminApp },
    { opsQueueAccess },
    { FerryMetrics },
    { Activity },
  ] = await Promise.all([
    import("./spool/sqlite_spool.ts"),
    import("./outbound/queue_ops.ts"),
    import("./admin/app.ts"),
    import("./admin/queue_access.ts"),
    import("./admin/metrics.ts"),
    import("./admin/activity.ts"),
  ]);
  const spool = new SqliteSpool({ dir: dir!, thread: "main" });
  await spool.open();
  try {
    const ops = new QueueOps({ spool, hostname });
    const token = crypto.randomUUID();
    const app = createAdminApp({
      metrics: new FerryMetrics({ queueByState: async () => (await spool.summary()).byState }),
      readiness: { spool: () => spool.problem(), listenersBound: false, stopping: false },
      config: {},
      spool,
      queue: opsQueueAccess(spool, () => ops),
      activity: new Activity(),
      hostname,
      tokens: [token],
      log: (text) => {
        if (/ failed: /.test(text)) console.error(text);
      },
    });
    const client = new AdminClient({
      url: "http://offline",
      token,
      fetch: async (req) => await app.fetch(req),
    });
    return await perform(client, call);
  } finally {
    await spool.close();
  }
}

/** Runs the command line; returns the exit code. */
export async function queueMain(argv: string[]): Promise<number> {
  let args: Args;
  let call: Call;
  try {
    args = parseArgs(argv);
    if (args.command === "help") {
      console.log(USAGE);
      return 0;
    }
    call = callOf(args);
    if (args.offline && (args.url !== undefined || args.token !== undefined)) {
      throw new UsageError("--offline works on the spool directly: no --url or --token");
    }
  } catch (err) {
    if (err instanceof UsageError || err instanceof RangeError) {
      console.error(`queue: ${err.message}\n${USAGE}`);
      return 64;
    }
    throw err;
  }
  let client: AdminClient | undefined;
  let urlFileOf: string | undefined;
  let transport: HttpsTransport | undefined;
  try {
    let result: unknown;
    if (args.offline) {
      result = await offline(args, call);
    } else {
      ({ client, urlFileOf, transport } = await remoteClient(args));
      result = await perform(client, call);
    }
    console.log(args.json ? JSON.stringify(result, null, 2) : human(call, result, Date.now()));
    const refused = (result as Partial<ResultsAnswer> | null)?.results?.some((o) => !o.ok) ?? false;
    return refused || result === null ? 1 : 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) console.error(`config: ${p}`);
      return 78;
    }
    if (err instanceof SpoolLockedError) {
      console.error(`queue: ${err.message}; drop --offline to go through its admin API`);
      return 75;
    }
    if (err instanceof UnavailableError) {
      console.error(`queue: ${err.message}`);
      return 69;
    }
    if (err instanceof AdminUnreachableError) {
      // A URL file nobody answers at, on a spool nobody holds: left by a Ferry that did not stop cleanly.
      const stale = urlFileOf !== undefined && !spoolLocked(urlFileOf);
      console.error(
        stale
          ? `queue: no Ferry is running on the spool "${urlFileOf}" (its ${URL_FILE} is left from a run that ` +
            `did not stop cleanly: ${err.message}); start it, or use --offline to work on the stopped spool`
          : `queue: ${err.message}`,
      );
      return 69;
    }
    if (err instanceof AdminApiError) {
      if (err.status === 401 || err.status === 403) {
        console.error(`queue: the admin API at ${client?.url} refused the token: ${err.message}`);
        return 77;
      }
      const details = err.details?.map((d) => `\n  ${d.path || "(body)"}: ${d.message}`).join("") ?? "";
      console.error(`queue: the admin API answered ${err.status}: ${err.message}${details}`);
      // 503: Ferry is still starting (try again); 400: a request the API found invalid.
      return err.status === 400 ? 64 : err.status === 503 ? 75 : 70;
    }
    console.error(`queue: ${errorMessage(err)}`);
    return 70;
  } finally {
    client?.close();
    transport?.close();
  }
}

if (import.meta.main) Deno.exit(await queueMain(Deno.args));
