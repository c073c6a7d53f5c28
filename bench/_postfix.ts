/**
 * A throwaway Postfix instance for the benchmark, isolated from the system one.
 *
 * Own config_directory, queue_directory and data_directory in a temp dir (`postfix -c DIR`),
 * listening on 127.0.0.1:<free port>, relaying for bench.test from 127.0.0.0/8. By default every
 * accepted message is put on HOLD, so it measures accept-to-queue only (cleanup fsyncs the queue
 * file before smtpd answers 250: the same durability rule as Ferry). With `relayTo` nothing is held
 * and every message is delivered by the smtp client to that one host (relayhost, no DNS); with `tls`
 * smtpd offers STARTTLS (RFC 3207) with that certificate. Trusts the local Postfix binaries; runs
 * them as root (the master drops to the postfix user).
 *
 * @module
 */

const decoder = new TextDecoder();

/** A running throwaway Postfix. */
export interface PostfixInstance {
  /** Listening address. */
  host: string;
  /** Listening port. */
  port: number;
  /** Root of the instance (config, queue, data, log). */
  dir: string;
  /** Postfix version, from `postconf -h mail_version`. */
  version: string;
  /** Number of queue files in the hold queue (accepted messages). */
  heldCount(): Promise<number>;
  /** Number of queue files not yet delivered (maildrop, incoming, active, deferred, hold). */
  queuedCount(): Promise<number>;
  /** Number of queue files the queue manager has not finished with yet (maildrop, incoming, active). */
  unsettledCount(): Promise<number>;
  /** Ports of the further smtpd listeners asked for in `extraSmtpd`, by name. */
  extraPorts: Record<string, number>;
  /** Number of lines of the instance's mail log containing `needle`. */
  logCount(needle: string): Promise<number>;
  /** Last lines of the instance's mail log. */
  logTail(lines?: number): Promise<string>;
  /** Stops the instance, waits for its master to exit, removes the temp dir. */
  stop(): Promise<void>;
}

/** Options for {@link startPostfix}. */
export interface PostfixOptions {
  /** Parent directory for the instance (default: system temp dir). Same disk as Ferry's spool. */
  parent?: string;
  /** Domain accepted for relay (default "bench.test"). */
  domain?: string;
  /** Further domains accepted for relay. */
  moreDomains?: string[];
  /** Postfix in_flow_delay (default "0s": no inbound flow throttling, Postfix's best case). */
  inFlowDelay?: string;
  /** Deliver every message to this host (relayhost) instead of holding it. */
  relayTo?: { host: string; port: number };
  /** Concurrent deliveries to the relay host (default 50): the smtp destination concurrency limit. */
  concurrency?: number;
  /** Postfix initial_destination_concurrency (default: Postfix's own, 5). */
  initialConcurrency?: number;
  /** Offer STARTTLS with this certificate chain and key (smtpd_tls_security_level = may). */
  tls?: { certFile: string; keyFile: string };
  /** Further main.cf lines, e.g. `tls_server_sni_maps = …` (appended last, so they win). */
  mainCf?: string[];
  /**
   * Further smtpd listeners on their own free ports, each with `-o` overrides (e.g.
   * `smtpd_tls_security_level=none`); their log lines carry `syslog_name` `postfix-<name>`.
   */
  extraSmtpd?: { name: string; overrides: string[] }[];
}

async function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; out: string }> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  return { code: out.code, out: (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim() };
}

/** Returns a free loopback TCP port (bind to 0, read the port, release it). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** True while the process exists and is not a zombie (PID 1 here may reap late). */
function pidAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function readPid(queueDir: string): Promise<number | undefined> {
  try {
    const n = Number((await Deno.readTextFile(`${queueDir}/pid/master.pid`)).trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Queue files in the named queue directories under `queue` (a missing one counts none). */
async function countQueues(queue: string, names: string[]): Promise<number> {
  let n = 0;
  for (const q of names) n += await countFiles(`${queue}/${q}`).catch(() => 0);
  return n;
}

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) n++;
    else if (e.isDirectory) n += await countFiles(`${dir}/${e.name}`);
  }
  return n;
}

/** Waits until something on host:port answers with a 220 banner. */
export async function waitForBanner(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: host, port });
      try {
        const buf = new Uint8Array(512);
        const timer = setTimeout(() => conn.close(), 2000);
        const n = await conn.read(buf).finally(() => clearTimeout(timer));
        const banner = n ? decoder.decode(buf.subarray(0, n)) : "";
        if (banner.startsWith("220")) {
          await conn.write(new TextEncoder().encode("QUIT\r\n")).catch(() => 0);
          return;
        }
        last = `banner "${banner.trim()}"`;
      } finally {
        try {
          conn.close();
        } catch { /* closed by timer */ }
      }
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`No 220 banner on ${host}:${port} within ${timeoutMs} ms (${last})`);
}

/** Creates, checks and starts an isolated Postfix instance; throws if any step fails. */
export async function startPostfix(options: PostfixOptions = {}): Promise<PostfixInstance> {
  const domain = options.domain ?? "bench.test";
  const dir = await Deno.makeTempDir({ dir: options.parent, prefix: "ferry-bench-postfix-" });
  await Deno.chmod(dir, 0o755);
  const etc = `${dir}/etc`, queue = `${dir}/queue`, data = `${dir}/data`, log = `${dir}/maillog`;
  for (const d of [etc, queue, data]) await Deno.mkdir(d);
  const port = freePort();
  const deadPort = freePort();
  const relay = options.relayTo;
  const concurrency = options.concurrency ?? 50;
  const mainCf = [
    "compatibility_level = 3.6",
    `config_directory = ${etc}`,
    `queue_directory = ${queue}`,
    `data_directory = ${data}`,
    `maillog_file_prefixes = ${dir}`,
    `maillog_file = ${log}`,
    "myhostname = postfix.bench.test",
    `mydomain = ${domain}`,
    "myorigin = $myhostname",
    "inet_protocols = ipv4",
    "inet_interfaces = 127.0.0.1",
    "mynetworks = 127.0.0.0/8",
    "mydestination =",
    "local_recipient_maps =",
    `relay_domains = ${[domain, ...options.moreDomains ?? []].join(", ")}`,
    "relay_recipient_maps =",
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
    "smtpd_recipient_restrictions = permit_mynetworks, reject",
    `in_flow_delay = ${options.inFlowDelay ?? "0s"}`,
    "smtpd_client_connection_count_limit = 0",
    "default_process_limit = 200",
    "biff = no",
  ];
  if (relay) {
    // Every message goes to the one sink; the relayhost is an IP literal in brackets: no DNS at all.
    mainCf.push(
      `relayhost = [${relay.host}]:${relay.port}`,
      `relay_transport = relay:[${relay.host}]:${relay.port}`,
      "smtp_dns_support_level = disabled",
      "smtp_tls_security_level = none",
      `default_destination_concurrency_limit = ${concurrency}`,
      `smtp_destination_concurrency_limit = ${concurrency}`,
      `relay_destination_concurrency_limit = ${concurrency}`,
      "smtp_connection_cache_on_demand = yes",
      ...(options.initialConcurrency
        ? [`initial_destination_concurrency = ${options.initialConcurrency}`]
        : []),
    );
  } else {
    mainCf.push(
      // A safety net should a message ever leave hold: nothing listens on that port.
      `relayhost = [127.0.0.1]:${deadPort}`,
      "defer_transports = smtp",
      // Every accepted message goes to the hold queue: accept-to-queue only, no delivery work.
      "smtpd_data_restrictions = check_client_access static:HOLD",
    );
  }
  if (options.tls) {
    mainCf.push(
      `smtpd_tls_cert_file = ${options.tls.certFile}`,
      `smtpd_tls_key_file = ${options.tls.keyFile}`,
      "smtpd_tls_security_level = may",
    );
  }
  mainCf.push(...options.mainCf ?? []);
  await Deno.writeTextFile(`${etc}/main.cf`, mainCf.join("\n") + "\n");
  const extraPorts: Record<string, number> = {};
  const extraLines = (options.extraSmtpd ?? []).map((e) => {
    const p = extraPorts[e.name] = freePort();
    const o = [`syslog_name=postfix-${e.name}`, ...e.overrides].map((x) => ` -o ${x}`).join("");
    return `127.0.0.1:${p} inet n - n - - smtpd${o}`;
  });
  await Deno.writeTextFile(
    `${etc}/master.cf`,
    [
      `127.0.0.1:${port} inet n - n - - smtpd`,
      ...extraLines,
      "cleanup unix n - n - 0 cleanup",
      "qmgr unix n - n 300 1 qmgr",
      "rewrite unix - - n - - trivial-rewrite",
      "bounce unix - - n - 0 bounce",
      "defer unix - - n - 0 bounce",
      "trace unix - - n - 0 bounce",
      "verify unix - - n - 1 verify",
      "proxymap unix - - n - - proxymap",
      "anvil unix - - n - 1 anvil",
      "scache unix - - n - 1 scache",
      "error unix - - n - - error",
      "retry unix - - n - - error",
      "smtp unix - - n - - smtp",
      "relay unix - - n - - smtp",
      "postlog unix-dgram n - n - 1 postlogd",
      "tlsmgr unix - - n 1000? 1 tlsmgr",
      "",
    ].join("\n"),
  );
  await run("chown", ["postfix:postfix", data]);
  const cleanup = async () => {
    const pid = await readPid(queue);
    if (pid && pidAlive(pid)) {
      await run("postfix", ["-c", etc, "stop"]).catch(() => undefined);
      if (pidAlive(pid)) {
        await new Promise((r) => setTimeout(r, 2000));
        if (pidAlive(pid)) {
          try {
            Deno.kill(pid, "SIGTERM");
          } catch { /* gone */ }
        }
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => undefined);
  };
  try {
    const check = await run("postfix", ["-c", etc, "check"]);
    if (check.code !== 0) throw new Error(`postfix check failed: ${check.out}`);
    const version = (await run("postconf", ["-c", etc, "-h", "mail_version"])).out;
    const start = await run("postfix", ["-c", etc, "start"]);
    if (start.code !== 0) throw new Error(`postfix start failed: ${start.out}`);
    await waitForBanner("127.0.0.1", port, 15_000);
    for (const p of Object.values(extraPorts)) await waitForBanner("127.0.0.1", p, 15_000);
    return {
      host: "127.0.0.1",
      port,
      dir,
      version,
      extraPorts,
      heldCount: () => countFiles(`${queue}/hold`),
      queuedCount: () => countQueues(queue, ["maildrop", "incoming", "active", "deferred", "hold"]),
      unsettledCount: () => countQueues(queue, ["maildrop", "incoming", "active"]),
      logCount: async (needle) => {
        const text = await Deno.readTextFile(log).catch(() => "");
        return text.split("\n").filter((l) => l.includes(needle)).length;
      },
      logTail: async (lines = 10) => {
        const text = await Deno.readTextFile(log).catch(() => "");
        return text.trimEnd().split("\n").slice(-lines).join("\n");
      },
      stop: async () => {
        const pid = await readPid(queue);
        const r = await run("postfix", ["-c", etc, "stop"]);
        const deadline = Date.now() + 15_000;
        while (pid && pidAlive(pid) && Date.now() < deadline) {
          await new Promise((res) => setTimeout(res, 100));
        }
        if (pid && pidAlive(pid)) {
          await cleanup();
          throw new Error(`Postfix master ${pid} did not stop: ${r.out}`);
        }
        await Deno.remove(dir, { recursive: true });
      },
    };
  } catch (e) {
    const tail = await Deno.readTextFile(log).catch(() => "");
    await cleanup();
    throw new Error(`${(e as Error).message}\n${tail.trimEnd().split("\n").slice(-5).join("\n")}`);
  }
}
