/**
 * Test helper: a real unbound (validating recursive resolver) on a free loopback port, serving test zones
 * as auth-zones, DNSSEC-signed with ldns when asked (recipe: shared/recipes/dnssec-test-zone.md), plus
 * unsigned local-data. Never talks beyond loopback: the root is stubbed to a dead loopback port.
 * Needs the Debian packages unbound and ldnsutils.
 */

import { freePort } from "./process.ts";

/** A zone served by unbound. The helper writes $ORIGIN, $TTL, SOA and NS; `records` holds the rest. */
export interface TestZone {
  /** Zone apex, e.g. "example.test" */
  name: string;
  /** Zone file lines relative to the apex, e.g. "@ IN MX 10 mx" */
  records: string;
  /** Sign with ldns-signzone and install its trust anchor (default false) */
  signed?: boolean;
  /** Default TTL (default 300) */
  ttl?: number;
  /** SOA minimum, the negative TTL (default 300) */
  negativeTtl?: number;
  /** Signed, but the installed trust anchor does not match: answers are bogus (SERVFAIL) */
  bogus?: boolean;
  /**
   * Signed, but the signatures over these RR types (e.g. ["TLSA"]) are corrupted after signing: only those
   * answers are bogus (SERVFAIL), the rest of the zone validates
   */
  badSignatures?: string[];
}

/** Options for `startUnbound`. */
export interface UnboundOptions {
  zones?: TestZone[];
  /** unbound `local-data` records (answers are never validated, AD=0), e.g. "host.local.test. A 127.0.0.2" */
  localData?: string[];
  /** Install a trust anchor that does not match the signing key, so validation fails (SERVFAIL) */
  wrongTrustAnchor?: boolean;
  /** Further addresses to answer on, "ip@port" (e.g. "127.53.0.1@53" for tools that read resolv.conf) */
  extraInterfaces?: string[];
  /** Log every query to `<dir>/unbound.log` ("info: 127.0.0.1 name. TYPE IN"), to count them */
  logQueries?: boolean;
}

/** A running unbound. */
export interface Unbound {
  address: "127.0.0.1";
  port: number;
  dir: string;
  /** Stops unbound and removes its directory. */
  stop(): Promise<void>;
}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

async function writeZone(
  dir: string,
  zone: TestZone,
  wrongAnchor: boolean,
): Promise<{ file: string; anchor?: string }> {
  const apex = zone.name.replace(/\.$/, "");
  const text = [
    `$ORIGIN ${apex}.`,
    `$TTL ${zone.ttl ?? 300}`,
    `@ IN SOA ns1 hostmaster 1 3600 900 604800 ${zone.negativeTtl ?? 300}`,
    `@ IN NS ns1`,
    `ns1 IN A 127.0.0.1`,
    zone.records,
    "",
  ].join("\n");
  const file = `${dir}/${apex}.zone`;
  await Deno.writeTextFile(file, text);
  if (!zone.signed) return { file };
  const ksk = await run("ldns-keygen", ["-a", "ECDSAP256SHA256", "-k", apex], dir);
  const zsk = await run("ldns-keygen", ["-a", "ECDSAP256SHA256", apex], dir);
  await run("ldns-signzone", ["-i", "20200101000000", "-e", "20370101000000", file, zsk, ksk], dir);
  if (zone.badSignatures?.length) {
    const types = new Set(zone.badSignatures.map((t) => t.toUpperCase()));
    const signed = (await Deno.readTextFile(`${file}.signed`)).split("\n").map((line) => {
      const f = line.split(/\s+/);
      if (f[3] !== "RRSIG" || !types.has(f[4])) return line;
      // Flip one character of the base64 signature: same length, wrong value.
      const sig = f[f.length - 1];
      f[f.length - 1] = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
      return f.join("\t");
    });
    await Deno.writeTextFile(`${file}.signed`, signed.join("\n"));
  }
  const anchorKey = wrongAnchor ? await run("ldns-keygen", ["-a", "ECDSAP256SHA256", "-k", apex], dir) : ksk;
  return { file: `${file}.signed`, anchor: `${dir}/${anchorKey}.ds` };
}

/** Starts unbound with the given zones; stop it in a finally block. Startup takes about 0.1 s (plus signing). */
export async function startUnbound(options: UnboundOptions = {}): Promise<Unbound> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-unbound-" });
  const written = await Promise.all(
    (options.zones ?? []).map((z) => writeZone(dir, z, !!options.wrongTrustAnchor || !!z.bogus)),
  );
  const anchors = written.filter((w) => w.anchor).map((w) => `    trust-anchor-file: "${w.anchor}"`);
  const authZones = (options.zones ?? []).map((z, i) =>
    [
      "auth-zone:",
      `    name: "${z.name.replace(/\.$/, "")}."`,
      `    zonefile: "${written[i].file}"`,
      "    for-downstream: no",
      "    for-upstream: yes",
      "    fallback-enabled: no",
    ].join("\n")
  );
  const localData = (options.localData ?? []).map((r) => `    local-data: "${r}"`);
  // unbound answers many reverse and special-use zones itself (RFC 6303); let ours through.
  const nodefault = (options.zones ?? []).map((z) =>
    `    local-zone: "${z.name.replace(/\.$/, "")}." nodefault`
  );
  for (let tries = 0;; tries++) {
    const port = freePort();
    const conf = [
      "server:",
      "    interface: 127.0.0.1",
      ...(options.extraInterfaces ?? []).map((i) => `    interface: ${i}`),
      `    port: ${port}`,
      "    do-ip6: no",
      "    do-daemonize: no",
      '    username: ""',
      '    chroot: ""',
      `    directory: "${dir}"`,
      `    pidfile: "${dir}/unbound.pid"`,
      "    use-syslog: no",
      `    logfile: "${dir}/unbound.log"`,
      "    access-control: 127.0.0.0/8 allow",
      '    module-config: "validator iterator"',
      '    local-zone: "test." nodefault',
      "    do-not-query-localhost: no",
      "    num-threads: 1",
      ...(options.logQueries ? ["    log-queries: yes"] : []),
      ...nodefault,
      ...anchors,
      ...localData,
      ...authZones,
      "stub-zone:",
      '    name: "."',
      "    stub-addr: 127.0.0.1@9",
      "remote-control:",
      "    control-enable: no",
      "",
    ].join("\n");
    await Deno.writeTextFile(`${dir}/unbound.conf`, conf);
    const child = new Deno.Command("unbound", {
      args: ["-d", "-c", `${dir}/unbound.conf`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    const stop = async () => {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
      }
      await status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
    const deadline = Date.now() + 5000;
    while (!exited && Date.now() < deadline) {
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        c.close();
        return { address: "127.0.0.1", port, dir, stop };
      } catch {
        await new Promise((r) => setTimeout(r, 15));
      }
    }
    const log = await Deno.readTextFile(`${dir}/unbound.log`).catch(() => "");
    if (!exited) child.kill("SIGKILL");
    await status;
    if (tries < 2 && /bind|address already in use/i.test(log)) continue;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`unbound did not start: ${log}`);
  }
}
