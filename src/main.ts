/**
 * The composition root: validated config → log, spool, events, TLS, inbound server; signals; graceful stop.
 */

import { ConfigError, loadConfigFile } from "./config/load.ts";
import type { ResolvedConfig } from "./config/schema.ts";
import { MAX_TIMER_MS } from "./core/units.ts";
import { type Logger, MainLog } from "./core/log.ts";
import { EventBus } from "./events/bus.ts";
import { type BoundAddress, InboundServer } from "./inbound/server.ts";
import { SqliteSpool } from "./spool/sqlite_spool.ts";
import { type Spool, SpoolLockedError } from "./spool/spool.ts";
import { buildTlsAcceptor, openTlsLibrary } from "./tls_setup.ts";
import { ignoreInspectorSignal } from "./inspector_signal.ts";
import { DnsClient } from "./dns/client.ts";
import type { Resolver } from "./dns/resolver.ts";
import { Scheduler } from "./outbound/scheduler.ts";
import { QueueOps } from "./outbound/queue_ops.ts";
import { SpaceGuard } from "./spool/free_space.ts";
import { startIdleTrim } from "./core/idle_trim.ts";
import { TlsClientContext } from "./tls/client.ts";
import { TlsConfigError } from "./tls/errors.ts";
import { errorMessage } from "./core/error_message.ts";
import { HostList } from "./core/host_list.ts";
import { RedisService } from "./policy/redis_service.ts";
import { setRedisService } from "./policy/services.ts";
import type { Check, Services } from "./policy/check.ts";
import type { OutboundStep } from "./policy/delivery_context.ts";
import type { Envelope } from "./core/envelope.ts";
import { dkimSign, loadDkimKeys } from "./policy/checks/dkim_sign.ts";
import { srsForwardStep, type SrsSettings } from "./policy/checks/srs.ts";
import { arcSeal } from "./policy/checks/arc.ts";
import { DmarcHistory } from "./policy/dmarc_history.ts";
import { DmarcReporter } from "./outbound/dmarc_reporter.ts";
import { TlsRptStore } from "./outbound/security/tls_rpt.ts";
import { TlsRptReporter } from "./outbound/tls_rpt_reporter.ts";
import { FerryMetrics } from "./admin/metrics.ts";
import { createAdminApp } from "./admin/app.ts";
import { type AdminServer, serveAdmin } from "./admin/server.ts";
import { ensureTokenFile } from "./admin/token_file.ts";
import { removeUrlFile, writeUrlFile } from "./admin/url_file.ts";
import { redactConfig } from "./admin/redact.ts";
import type { Readiness } from "./admin/deps.ts";
import { parseAdminListen } from "./core/listen_address.ts";
import { observedResolver } from "./dns/observed_resolver.ts";
import { Activity } from "./admin/activity.ts";
import { opsQueueAccess } from "./admin/queue_access.ts";
import { combineObservers } from "./core/observer.ts";
import { installPanicHandlers, PANIC_EXIT } from "./panic.ts";

/** A running Ferry. */
export interface Ferry {
  addresses: BoundAddress[];
  /** The delivery side, when `delivery.enable` */
  scheduler?: Scheduler;
  /** The DMARC reporter, when `dmarc.reports` is configured (`sendPending()` queues the reports now) */
  dmarcReports?: DmarcReporter;
  /** The TLS-RPT reporter, when `tlsRpt.enable` and delivery is on (`sendPending()` sends finished days now) */
  tlsRptReports?: TlsRptReporter;
  /** Queue operations (list, hold, bounce, …), also served by the admin API (`deno task queue` uses it) */
  queueOps: QueueOps;
  spool: Spool;
  log: Logger;
  metrics: FerryMetrics;
  /** The admin listener, when `admin.enable` */
  admin?: AdminServer;
  /** A token the admin API accepts (the configured first one, or the generated one) */
  adminToken?: string;
  /** Graceful stop: no new connections, open transactions finish (up to the grace period), spool closed. */
  stop(): Promise<void>;
}

/** Options for starting Ferry in-process (tests use these). */
export interface StartOptions {
  log?: Logger & { close?(): void | Promise<void>; reopen?(): void };
  spool?: Spool;
  /** DNS resolver for delivery (default: Ferry's DNS client per `dns`) */
  resolver?: Resolver;
  /** Called when the spool worker died for good (default: log and exit 75 for the supervisor) */
  onSpoolFatal?: (err: Error) => void;
}

/** The delivery side's CA store (`delivery.tlsVerifyCertificates`), when delivery is on and one is set. */
async function deliveryTlsContext(config: ResolvedConfig): Promise<TlsClientContext | undefined> {
  const ca = config.delivery.tlsVerifyCertificates;
  if (!config.delivery.enable || !ca) return undefined;
  try {
    const isDir = (await Deno.stat(ca).catch(() => undefined))?.isDirectory;
    return new TlsClientContext(isDir ? { caDir: ca } : { caFile: ca });
  } catch (err) {
    if (err instanceof TlsConfigError) {
      throw new ConfigError([`delivery.tlsVerifyCertificates: ${err.message}`]);
    }
    throw err;
  }
}

/** Starts every room from a validated config. Throws ConfigError for problems found only at start (key files). */
export async function startFerry(config: ResolvedConfig, opts: StartOptions = {}): Promise<Ferry> {
  const hostname = config.hostname ?? Deno.hostname();
  // A log made here is this instance's to flush and close on stop; a given one belongs to the caller.
  const ownLog = opts.log ? undefined : new MainLog({ file: config.log.file, format: config.log.format });
  const log = opts.log ?? ownLog!;
  openTlsLibrary(config);
  const tlsSetup = config.tls.certificates.length > 0 ? await buildTlsAcceptor(config, log) : undefined;
  const tls = tlsSetup?.accept;
  // Every file the config names is read before the spool is opened and ports are bound.
  let tlsContext: TlsClientContext | undefined;
  try {
    tlsContext = await deliveryTlsContext(config);
  } catch (err) {
    tlsSetup?.close();
    throw err;
  }
  let outbound: OutboundStep[];
  let srs: SrsSettings | undefined;
  try {
    srs = await srsSettings(config);
    outbound = await outboundChain(config, srs);
  } catch (err) {
    tlsSetup?.close();
    tlsContext?.close();
    throw err;
  }
  const onFatal = opts.onSpoolFatal ?? ((err: Error) => {
    // A spool that cannot come back would answer 452 forever: exit for the supervisor instead.
    log.write(`spool failed for good, exiting: ${err.message}`);
    Deno.exit(75);
  });
  const spool = opts.spool ??
    new SqliteSpool({
      dir: config.spool.dir,
      log: (line) => log.write(line),
      onFatal,
      // Below spool.minFree MAIL is refused: space delivered messages leave must show in statfs again.
      giveBackBelow: config.spool.minFree,
    });
  let report;
  try {
    report = await spool.open();
  } catch (err) {
    tlsSetup?.close();
    if (opts.spool || err instanceof SpoolLockedError) throw err;
    throw new ConfigError([
      `spool.dir: cannot open "${config.spool.dir}": ${errorMessage(err)}`,
    ]);
  }
  for (const q of report.quarantined) {
    log.write(`spool entry ${q.id} quarantined to ${q.path}: ${q.reason}`, { id: q.id });
  }
  if (report.migrated) {
    log.write(
      `spool ${config.spool.dir}: converted from schema ${report.migrated.from} to ${report.migrated.to} ` +
        `(${report.migrated.messages} message(s))`,
    );
  }
  log.write(`spool ${config.spool.dir}: ${report.queued} message(s) queued`);
  let spoolClosed = false;
  const readiness: Readiness = {
    // The spool's own state, asked at each probe: a worker that died for good makes Ferry not ready.
    spool: () => spoolClosed ? "spool is closed" : spool.problem?.(),
    listenersBound: false,
    stopping: false,
  };
  // Commits and writes so far (SqliteSpool keeps them; a spool passed in by a test may not): the idle trim's
  // sign of activity.
  const spoolStats = () => (spool as { stats?: { commits: number; writes: number } }).stats;
  const metrics = new FerryMetrics({
    queueByState: async () => (await spool.summary()).byState,
    stapleAges: () => tlsSetup?.stapleAges() ?? [],
  });
  spool.observeCommits?.((seconds, writes) => metrics.spoolCommit(seconds, writes));
  const activity = new Activity();
  const observer = combineObservers(metrics, activity);
  // The scheduler starts after the admin listener: queue actions reach it through this holder.
  const running: { queueOps?: QueueOps } = {};
  let admin: { server: AdminServer; token: string } | undefined;
  try {
    admin = config.admin.enable
      ? await startAdmin(config, {
        metrics,
        activity,
        readiness,
        spool,
        log,
        hostname,
        queueOps: () => running.queueOps,
      })
      : undefined;
  } catch (err) {
    await spool.close();
    tlsSetup?.close();
    throw err;
  }
  // The queue command stops finding this process once the admin URL file is gone.
  const unpublish = () => admin ? removeUrlFile(config.spool.dir).catch(() => {}) : Promise.resolve();
  const events = new EventBus(config.events, { log, timeoutMs: config.limits.eventTimeout });
  // Lookups and rate limits find Redis through the services registry; a server down at start only defers.
  const redis = config.redis
    ? new RedisService({
      servers: config.redis.servers,
      timeoutMs: config.redis.timeout,
      log: (line) => log.write(line),
    })
    : undefined;
  if (redis) {
    await redis.open();
    setRedisService(redis);
  }
  const resolver = observedResolver(
    opts.resolver ?? new DnsClient({ nameservers: config.dns.nameservers, timeout: config.dns.timeout }),
    observer,
  );
  const checks = config.checks as unknown as Check[];
  const opened: Check[] = [];
  let scheduler: Scheduler | undefined;
  let dmarcReports: DmarcReporter | undefined;
  let dmarcHistory: DmarcHistory | undefined;
  try {
    const r = config.dmarc.reports;
    if (r) {
      const file = r.historyFile ?? `${config.spool.dir}/dmarc-history.db`;
      try {
        dmarcHistory = new DmarcHistory(file);
      } catch (err) {
        throw new ConfigError([`dmarc.reports.historyFile: cannot open "${file}": ${errorMessage(err)}`]);
      }
      dmarcReports = new DmarcReporter({
        history: dmarcHistory,
        spool,
        resolver,
        log,
        hostname,
        orgName: r.orgName ?? hostname,
        email: r.email ?? `postmaster@${hostname}`,
        failureReports: r.failure,
        enqueue: (id) => scheduler?.enqueue(id),
      });
    }
    const services: Services = {
      resolver,
      log,
      hostname,
      authservId: config.authservId ?? hostname,
      canQuarantine: true,
      dmarcReports,
      redis,
    };
    for (const check of checks) {
      await check.open?.(services);
      opened.push(check);
    }
  } catch (err) {
    await closeChecks(opened, log);
    dmarcHistory?.close();
    await unpublish();
    await admin?.server.stop();
    await spool.close();
    tlsSetup?.close();
    setRedisService(undefined);
    await redis?.close();
    throw err;
  }
  // New mail wakes the queue manager directly: a slow msg:received handler must not delay first delivery.
  const onStored = (id: string) => scheduler?.enqueue(id);
  const deferAtArrival = (env: Envelope) => scheduler?.deferIfDead(env) ?? Promise.resolve(undefined);
  const server = new InboundServer({
    config,
    hostname,
    spool,
    log,
    events,
    tls,
    resolver,
    checks,
    srs,
    onStored,
    deferAtArrival,
    spaceGuard: new SpaceGuard({ dir: config.spool.dir, minFree: config.spool.minFree }),
    observer,
  });
  let addresses;
  try {
    addresses = server.start();
  } catch (err) {
    // A listener that cannot bind: release what is already open before the error reaches the caller.
    await server.stop(0);
    await closeChecks(opened, log);
    dmarcHistory?.close();
    await unpublish();
    await admin?.server.stop();
    await spool.close();
    tlsSetup?.close();
    setRedisService(undefined);
    await redis?.close();
    throw err;
  }
  readiness.listenersBound = true;
  // TLS-RPT (RFC 8460): results kept in the spool directory, reports sent at each UTC day boundary.
  const tlsRptStore = config.tlsRpt.enable
    ? new TlsRptStore(`${config.spool.dir}/tls-rpt-results.json`)
    : undefined;
  let tlsRptReports: TlsRptReporter | undefined;
  if (tlsRptStore) {
    const t = config.tlsRpt;
    const email = t.email ?? `postmaster@${hostname}`;
    let context: TlsClientContext | undefined;
    tlsRptReports = new TlsRptReporter({
      store: tlsRptStore,
      spool,
      resolver,
      log,
      hostname,
      organizationName: t.organizationName ?? hostname,
      contactInfo: t.contactInfo ?? email,
      email,
      tlsContext: () => context ??= new TlsClientContext(t.caFile ? { caFile: t.caFile } : {}),
      httpsTimeoutMs: t.timeout,
      enqueue: (id) => scheduler?.enqueue(id),
    });
    // RFC 8460 §5.3: receivers ignore mailed reports without a DKIM signature of the reporting domain.
    const submitter = tlsRptReports.submitter;
    const signs = (d: string) => submitter === d || submitter.endsWith(`.${d}`);
    if (!config.dkim.sign.some((k) => signs(k.domain.toLowerCase()))) {
      log.write(
        `TLS-RPT: no dkim.sign key for ${submitter}: mailed reports will go out unsigned (RFC 8460 5.3)`,
      );
    }
  }
  if (config.delivery.enable) {
    scheduler = new Scheduler({
      config,
      hostname,
      spool,
      resolver,
      log,
      events,
      tlsContext,
      endpoints: addresses.map((a) => `${a.address}:${a.port}`),
      outbound,
      observer,
      tlsRpt: tlsRptStore,
    });
    await scheduler.start();
  }
  tlsRptReports?.start();
  // Aggregate reports once per dmarc.reports.interval (and on SIGUSR2, see main()).
  const sendReports = async () => {
    try {
      const ids = await dmarcReports?.sendPending();
      if (ids?.length) log.write(`DMARC: ${ids.length} aggregate report(s) queued`);
    } catch (err) {
      log.write(`DMARC reports failed: ${errorMessage(err)}`);
    }
  };
  const reportTimer = dmarcReports ? setInterval(sendReports, config.dmarc.reports!.interval) : undefined;
  if (reportTimer !== undefined) Deno.unrefTimer(reportTimer);
  const queueOps = new QueueOps({ spool, hostname, log, manager: scheduler });
  running.queueOps = queueOps;
  // Memory a burst took goes back once it is over (a full GC and malloc_trim after a quiet interval).
  const stopIdleTrim = startIdleTrim({
    activity: () => spoolStats()?.writes ?? 0,
    // Never in the middle of a session (a long upload writes nothing until its end) or a delivery.
    busy: () => server.connections > 0 || (scheduler?.activeCount ?? 0) > 0,
  });
  log.write(`Ferry started as ${hostname}`);
  let stopped: Promise<void> | undefined;
  return {
    addresses,
    scheduler,
    queueOps,
    spool,
    log,
    dmarcReports,
    tlsRptReports,
    metrics,
    admin: admin?.server,
    adminToken: admin?.token,
    stop() {
      stopped ??= (async () => {
        readiness.stopping = true;
        clearInterval(reportTimer);
        stopIdleTrim();
        await tlsRptReports?.stop();
        // The queue command stops finding this process here; the API itself answers until the end.
        await unpublish();
        await server.stop(config.limits.shutdownGrace);
        await scheduler?.stop(config.limits.shutdownGrace);
        await closeChecks(opened, log);
        dmarcHistory?.close();
        await admin?.server.stop();
        await spool.close();
        spoolClosed = true;
        tlsSetup?.close();
        setRedisService(undefined);
        await redis?.close();
        log.write("Ferry stopped");
        await ownLog?.close();
      })();
      return stopped;
    },
  };
}

/** SRS settings with the secrets read (`srs.secretFile`: one secret a line, as postsrsd reads it). */
async function srsSettings(config: ResolvedConfig): Promise<SrsSettings | undefined> {
  const s = config.srs;
  if (!s) return undefined;
  let secrets = s.secrets;
  if (s.secretFile !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(s.secretFile);
    } catch (err) {
      throw new ConfigError([`srs.secretFile: cannot read "${s.secretFile}": ${errorMessage(err)}`]);
    }
    secrets = text.split(/\r?\n/).filter((l) => l.length > 0);
    if (secrets.length === 0) throw new ConfigError([`srs.secretFile: "${s.secretFile}" holds no secret`]);
  }
  return {
    domain: s.domain,
    secrets: secrets!,
    maxAgeDays: Math.max(1, Math.round(s.maxAge / 86_400_000)),
    hashLength: s.hashLength,
    base64url: s.base64url,
    routes: s.routes,
    localDomains: new HostList(s.localDomains ?? config.relay.domains, {
      name: s.localDomains ? "srs.localDomains" : "relay.domains",
      timeoutMs: config.limits.policyTimeout,
    }),
  };
}

/**
 * The outbound chain: SRS, then DKIM signing (keys read now: a bad one is a ConfigError naming it), then
 * `outbound` from config.ts.
 */
async function outboundChain(config: ResolvedConfig, srs: SrsSettings | undefined): Promise<OutboundStep[]> {
  const { keys, problems } = await loadDkimKeys(config.dkim.sign);
  const seal = config.arc.seal ? await loadDkimKeys([config.arc.seal], "arc.seal") : undefined;
  problems.push(...(seal?.problems ?? []).map((p) => p.replace(/^arc\.seal\[0\]/, "arc.seal")));
  if (problems.length) throw new ConfigError(problems);
  const arcKey = seal?.keys[0];
  return [
    ...(srs ? [srsForwardStep(srs)] : []),
    ...(keys.length ? [dkimSign(keys)] : []),
    ...(arcKey
      ? [arcSeal({
        key: arcKey,
        routes: config.arc.routes,
        authservId: config.authservId ?? config.hostname ?? Deno.hostname(),
      })]
      : []),
    ...(config.outbound as unknown as OutboundStep[]),
  ];
}

/** Closes checks in reverse order of opening; a failure is logged, never stops the others. */
async function closeChecks(checks: readonly Check[], log: Logger): Promise<void> {
  for (const check of [...checks].reverse()) {
    try {
      await check.close?.();
    } catch (err) {
      log.write(`check ${check.name}: close failed: ${errorMessage(err)}`);
    }
  }
}

/** Starts the admin listener; a bind failure is a ConfigError naming admin.listen. */
async function startAdmin(
  config: ResolvedConfig,
  deps: {
    metrics: FerryMetrics;
    activity: Activity;
    readiness: Readiness;
    spool: Spool;
    log: Logger;
    hostname: string;
    queueOps: () => QueueOps | undefined;
  },
): Promise<{ server: AdminServer; token: string }> {
  const address = parseAdminListen(config.admin.listen)!;
  let tokens = config.admin.tokens;
  if (tokens.length === 0) {
    let file;
    try {
      file = await ensureTokenFile(config.spool.dir);
    } catch (err) {
      throw new ConfigError([
        `admin.tokens: cannot keep a token in "${config.spool.dir}": ${errorMessage(err)}`,
      ]);
    }
    deps.log.write(`admin token ${file.created ? "written to" : "read from"} ${file.path}`);
    tokens = [file.token];
  }
  let tls: { cert: string; key: string } | undefined;
  if (config.admin.tls) {
    try {
      tls = {
        cert: await Deno.readTextFile(config.admin.tls.cert),
        key: await Deno.readTextFile(config.admin.tls.key),
      };
    } catch (err) {
      throw new ConfigError([`admin.tls: ${errorMessage(err)}`]);
    }
  }
  const app = createAdminApp({
    metrics: deps.metrics,
    readiness: deps.readiness,
    config: redactConfig(config),
    spool: deps.spool,
    queue: opsQueueAccess(deps.spool, deps.queueOps),
    activity: deps.activity,
    hostname: deps.hostname,
    tokens,
    log: (text) => deps.log.write(text),
  });
  let server: AdminServer;
  try {
    server = serveAdmin(app, address, tls);
  } catch (err) {
    throw new ConfigError([`admin.listen: cannot listen on ${config.admin.listen}: ${errorMessage(err)}`]);
  }
  deps.log.write(`admin listening on ${server.url}`);
  // Where `deno task queue` finds this process (written while we hold the spool's lock; removed on stop).
  try {
    await writeUrlFile(config.spool.dir, server.url);
  } catch (err) {
    deps.log.write(`admin: cannot write ${config.spool.dir}/admin.url: ${errorMessage(err)}`);
  }
  return { server, token: tokens[0] };
}

const USAGE = "usage: ferry [--config FILE] [--check-config]";

/** The command line: returns the exit code (78 for a configuration error, as in sysexits.h EX_CONFIG). */
export async function main(args: string[]): Promise<number> {
  let configPath = "./config.ts";
  let checkOnly = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--config" || a === "-c") configPath = args[++i] ?? "";
    else if (a.startsWith("--config=")) configPath = a.slice(9);
    else if (a === "--check-config") checkOnly = true;
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      return 0;
    } else {
      console.error(`unknown argument "${a}"\n${USAGE}`);
      return 64;
    }
  }
  const signals: [Deno.Signal, () => void][] = [];
  let opened: MainLog | undefined;
  // Set once the log is open: what a panic (or a signal) calls to stop gracefully.
  let requestStop: (() => void) | undefined;
  let hardExit: ReturnType<typeof setTimeout> | undefined;
  let stopGraceMs: number | undefined;
  // An error nothing caught ends the process gracefully, logged, with a status the supervisor sees.
  const panics = installPanicHandlers({
    log: () => opened,
    stop: () => {
      // A stop that hangs (the state that panicked may be what it waits for) is cut short.
      hardExit = setTimeout(async () => {
        await opened?.close().catch(() => {});
        Deno.exit(PANIC_EXIT);
      }, Math.min((stopGraceMs ?? 30_000) + 10_000, MAX_TIMER_MS));
      Deno.unrefTimer(hardExit);
      requestStop?.();
    },
  });
  // First thing: from here on a SIGUSR1 cannot open Deno's inspector on 127.0.0.1:9229.
  const inspectorSignal = ignoreInspectorSignal();
  try {
    const config = await loadConfigFile(configPath);
    stopGraceMs = config.limits.shutdownGrace;
    if (checkOnly) {
      openTlsLibrary(config);
      if (config.tls.certificates.length > 0) (await buildTlsAcceptor(config, { write() {} })).close();
      (await deliveryTlsContext(config))?.close();
      await outboundChain(config, await srsSettings(config));
      console.log(`${configPath}: configuration OK`);
      return panics.panicked ? PANIC_EXIT : 0;
    }
    let log: MainLog;
    try {
      log = opened = new MainLog({ file: config.log.file, format: config.log.format });
    } catch (err) {
      throw new ConfigError([`log.file: cannot open "${config.log.file}": ${errorMessage(err)}`]);
    }
    // Handlers go in before start-up: listeners accept mail while recovery and the scheduler still start,
    // and a SIGTERM then must be a graceful stop, not the default kill.
    const running: { ferry?: Ferry } = {};
    let markStarted!: () => void;
    const started = new Promise<void>((resolve) => (markStarted = resolve));
    let stopRequested = false;
    let resolveDone!: () => void;
    const done = new Promise<void>((resolve) => (resolveDone = resolve));
    const finish = (ferry: Ferry) =>
      ferry.stop().catch((err) => log.write(`error while stopping: ${errorMessage(err)}`)).finally(
        resolveDone,
      );
    const stopNow = () => {
      if (stopRequested) return;
      stopRequested = true;
      if (running.ferry) finish(running.ferry);
    };
    const stop = (signal: Deno.Signal) => () => {
      if (stopRequested) return;
      log.write(`${signal} received: stopping`);
      stopNow();
    };
    requestStop = stopNow;
    // A panic before this point (while the config loaded) stops the start here.
    if (panics.panicked) stopNow();
    const usr2 = () => {
      const tlsRpt = running.ferry?.tlsRptReports;
      if (tlsRpt) {
        log.write("SIGUSR2 received: sending TLS-RPT reports of finished days");
        tlsRpt.sendPending().then(
          (r) => log.write(`TLS-RPT: ${r.sent} report(s) handed off, ${r.failed} to try again`),
          (err) => log.write(`TLS-RPT reports failed: ${errorMessage(err)}`),
        );
      }
      const reporter = running.ferry?.dmarcReports;
      if (!reporter) return log.write("SIGUSR2 received: no dmarc.reports configured");
      log.write("SIGUSR2 received: sending DMARC aggregate reports");
      reporter.sendPending().then(
        (ids) => log.write(`DMARC: ${ids.length} aggregate report(s) queued`),
        (err) => log.write(`DMARC reports failed: ${errorMessage(err)}`),
      );
    };
    signals.push(
      ["SIGUSR2", () => {
        // `kill -USR2 <pid>`: queue the pending DMARC aggregate reports and the TLS-RPT reports of finished
        // days now. A signal during start-up (the log already says "started") waits for the reporters.
        if (!running.ferry) {
          started.then(usr2);
          return;
        }
        usr2();
      }],
      ["SIGTERM", stop("SIGTERM")],
      ["SIGINT", stop("SIGINT")],
      ["SIGHUP", () => {
        // A log path that cannot be opened now (directory gone, permissions) must not stop mail.
        try {
          log.reopen();
          log.write("SIGHUP received: log file reopened");
        } catch (err) {
          log.write(
            `SIGHUP received: cannot reopen "${config.log.file}", still writing to the old file: ${
              errorMessage(err)
            }`,
          );
        }
      }],
    );
    if (!inspectorSignal.ignored) {
      log.write(
        `warning: SIGUSR1 not ignored (${inspectorSignal.detail}): it opens Deno's inspector on 127.0.0.1:9229`,
      );
    }
    for (const [sig, fn] of signals) Deno.addSignalListener(sig, fn);
    running.ferry = await startFerry(config, { log });
    markStarted();
    if (stopRequested) finish(running.ferry);
    await done;
    return panics.panicked ? PANIC_EXIT : 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) console.error(`config: ${p}`);
      return 78;
    }
    if (err instanceof SpoolLockedError) {
      console.error(`ferry: ${err.message}`);
      return 75;
    }
    console.error(`ferry: ${errorMessage(err)}`);
    return 70;
  } finally {
    clearTimeout(hardExit);
    for (const [sig, fn] of signals) Deno.removeSignalListener(sig, fn);
    // Every line queued before the stop (or a failed start) is written out before the process exits.
    await opened?.close();
  }
}
