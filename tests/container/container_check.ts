/**
 * `deno task test:container`: proves the Dockerfile without a Docker engine. Builds a Debian 12 root file system
 * with debootstrap, stands in for the `node:20-bookworm-slim` base (Debian's nodejs and npm), replays the
 * Dockerfile's RUN/WORKDIR/COPY/USER/ENV steps in a chroot, starts the image's CMD with the image's own
 * config.ts, unchanged, as the unprivileged user in its own network namespace (a veth pair stands in for
 * Docker's bridge) with the spool on a bind mount, delivers a message with swaks from outside to the EXPOSEd
 * port, and stops it with SIGTERM.
 * Needs root, debootstrap and swaks; the root file system is kept in /var/tmp/ferry-container (FERRY_CTR_DIR)
 * so a second run skips debootstrap (`--fresh` rebuilds it).
 */

import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const BASE = Deno.env.get("FERRY_CTR_DIR") ?? "/var/tmp/ferry-container";
const ROOT = `${BASE}/root`;
const MIRROR = Deno.env.get("DEBIAN_MIRROR") ?? "http://deb.debian.org/debian";
const dec = new TextDecoder();

function step(text: string): void {
  console.log(`\n== ${text}`);
}

async function sh(
  cmd: string[],
  opts: { env?: Record<string, string>; quiet?: boolean } = {},
): Promise<string> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  if (!opts.quiet) console.log(text.trimEnd().split("\n").slice(-5).join("\n"));
  if (out.code !== 0) throw new Error(`${cmd.join(" ")} failed with ${out.code}:\n${text.slice(-3000)}`);
  return text;
}

const mounts: string[] = [];
async function bind(source: string, target: string, extra: string[] = []): Promise<void> {
  await Deno.mkdir(target, { recursive: true });
  await sh(["mount", "--bind", ...extra, source, target], { quiet: true });
  mounts.push(target);
}
async function unmountAll(): Promise<void> {
  for (const m of mounts.reverse()) await sh(["umount", "-l", m], { quiet: true }).catch(() => {});
  mounts.length = 0;
}

/** Runs a shell command in the chroot as `user`, in `dir`, with `env`. */
function inRoot(script: string, user: string, dir: string, env: Record<string, string>): string[] {
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return [
    "chroot",
    `--userspec=${user}`,
    ROOT,
    "/usr/bin/env",
    "-i",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND=noninteractive",
    ...envArgs,
    "/bin/sh",
    "-c",
    `cd ${dir} && ${script}`,
  ];
}

/** The Dockerfile's instructions, continuation lines joined. */
function dockerfileSteps(text: string): { op: string; arg: string }[] {
  const joined = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) =>
    l && !l.startsWith("#")
  );
  return joined.map((l) => {
    const m = /^(\w+)\s+(.*)$/.exec(l)!;
    return { op: m[1].toUpperCase(), arg: m[2] };
  });
}

/** A network namespace joined to the host by a veth pair, as Docker's bridge joins a container. */
interface Netns {
  name: string;
  hostAddress: string;
  address: string;
  remove(): Promise<void>;
}

async function makeNetns(): Promise<Netns> {
  const n = Deno.pid % 100_000;
  const name = `ferryctr${n}`;
  const subnet = `10.203.${Deno.pid % 250}`;
  const [hostIf, innerIf] = [`fc${n}h`, `fc${n}c`];
  const ip = (...args: string[]) => sh(["ip", ...args], { quiet: true });
  await ip("netns", "add", name);
  const netns: Netns = {
    name,
    hostAddress: `${subnet}.1`,
    address: `${subnet}.2`,
    async remove() {
      await ip("netns", "del", name).catch(() => {});
      await ip("link", "del", hostIf).catch(() => {});
    },
  };
  try {
    await ip("link", "add", hostIf, "type", "veth", "peer", "name", innerIf);
    await ip("link", "set", innerIf, "netns", name);
    await ip("addr", "add", `${netns.hostAddress}/30`, "dev", hostIf);
    await ip("link", "set", hostIf, "up");
    await ip("netns", "exec", name, "ip", "addr", "add", `${netns.address}/30`, "dev", innerIf);
    await ip("netns", "exec", name, "ip", "link", "set", innerIf, "up");
    await ip("netns", "exec", name, "ip", "link", "set", "lo", "up");
  } catch (err) {
    await netns.remove();
    throw err;
  }
  return netns;
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("needs root (debootstrap, chroot, mount)");
  const fresh = Deno.args.includes("--fresh");
  if (fresh) await Deno.remove(ROOT, { recursive: true }).catch(() => {});
  const ready = await Deno.stat(`${ROOT}/.ferry-base-ready`).then(() => true, () => false);
  const bootstrapped = await Deno.stat(`${ROOT}/usr/bin/apt-get`).then(() => true, () => false);
  if (!bootstrapped) {
    step(`debootstrap bookworm into ${ROOT}`);
    await Deno.remove(ROOT, { recursive: true }).catch(() => {});
    await Deno.mkdir(BASE, { recursive: true });
    await sh(["debootstrap", "--variant=minbase", "bookworm", ROOT, MIRROR]);
  }
  await Deno.copyFile("/etc/resolv.conf", `${ROOT}/etc/resolv.conf`).catch(() => {});
  await bind("/proc", `${ROOT}/proc`);
  await bind("/dev", `${ROOT}/dev`);
  let child: Deno.ChildProcess | undefined;
  let netns: Netns | undefined;
  try {
    if (!ready) {
      step("the base image: node:20-bookworm-slim stands in as Debian's nodejs and npm");
      await sh(
        inRoot(
          "apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm ca-certificates",
          "root",
          "/",
          {},
        ),
      );
      await Deno.writeTextFile(`${ROOT}/.ferry-base-ready`, new Date().toISOString());
    }
    // The build machine's own CAs (an egress proxy that re-signs TLS): what `docker build` on this machine
    // would need as well. Handed to the RUN steps only, never written into the image's files by the Dockerfile.
    const buildEnv: Record<string, string> = {};
    const extraCas = [...Deno.readDirSync("/usr/local/share/ca-certificates")].filter((e) =>
      e.name.endsWith(".crt")
    );
    if (extraCas.length) {
      await Deno.mkdir(`${ROOT}/usr/local/share/ca-certificates`, { recursive: true });
      for (const e of extraCas) {
        await Deno.copyFile(
          `/usr/local/share/ca-certificates/${e.name}`,
          `${ROOT}/usr/local/share/ca-certificates/${e.name}`,
        );
      }
      await sh(inRoot("update-ca-certificates >/dev/null", "root", "/", {}), { quiet: true });
      const bundle = "/etc/ssl/certs/ca-certificates.crt";
      Object.assign(buildEnv, { NODE_EXTRA_CA_CERTS: bundle, SSL_CERT_FILE: bundle, DENO_CERT: bundle });
      console.log(
        `build environment: ${extraCas.length} extra CA(s) of this machine trusted by the RUN steps`,
      );
    }
    // A fresh copy of the image's own layers each run: remove what earlier runs built.
    await sh(["chroot", ROOT, "/bin/sh", "-c", "userdel -r ferry 2>/dev/null; rm -rf /srv/ferry; true"], {
      quiet: true,
    });

    step("replaying the Dockerfile");
    let user = "root";
    let dir = "/";
    const env: Record<string, string> = {};
    let cmd: string[] = [];
    let expose: number[] = [];
    let volume = "";
    for (const { op, arg } of dockerfileSteps(await Deno.readTextFile(`${REPO}/Dockerfile`))) {
      console.log(`${op} ${arg.slice(0, 100)}`);
      if (op === "FROM" || op === "STOPSIGNAL") continue;
      if (op === "RUN") {
        await sh(
          inRoot(arg, user, dir, { HOME: user === "root" ? "/root" : "/srv/ferry", ...buildEnv, ...env }),
        );
      } else if (op === "WORKDIR") dir = arg;
      else if (op === "USER") user = `${arg}:${arg}`;
      else if (op === "ENV") {
        const [k, ...v] = arg.split("=");
        env[k.trim()] = v.join("=").trim();
      } else if (op === "COPY") {
        const m = /^(?:--chown=(\S+)\s+)?(\S+)\s+(\S+)$/.exec(arg)!;
        const target = m[3] === "." ? `${ROOT}${dir}` : `${ROOT}${m[3]}`;
        const files = (await sh(["git", "-C", REPO, "ls-files"], { quiet: true })).trim().split("\n");
        for (const f of files) {
          if (f.startsWith("var/")) continue;
          await Deno.mkdir(`${target}/${f}`.replace(/\/[^/]+$/, ""), { recursive: true });
          await Deno.copyFile(`${REPO}/${f}`, `${target}/${f}`).catch((e) => {
            if (!(e instanceof Deno.errors.NotFound)) throw e;
          });
        }
        if (m[1]) await sh(["chroot", ROOT, "chown", "-R", m[1], dir], { quiet: true });
      } else if (op === "VOLUME") volume = JSON.parse(arg)[0];
      else if (op === "EXPOSE") expose = arg.split(/\s+/).map(Number);
      else if (op === "CMD") cmd = JSON.parse(arg);
      else throw new Error(`Dockerfile instruction ${op} is not replayed by this check`);
    }
    if (!cmd.length || !volume) throw new Error("the Dockerfile has no CMD or VOLUME");
    console.log(`EXPOSE ${expose.join(" ")}; VOLUME ${volume}`);

    step("starting the CMD as the unprivileged user with the spool on a bind mount");
    const spool = await Deno.makeTempDir({ prefix: "ferry-ctr-spool-" });
    const uid = (await sh(["chroot", ROOT, "id", "-u", "ferry"], { quiet: true })).trim();
    await sh(["chown", `${uid}:${uid}`, spool], { quiet: true });
    await bind(spool, `${ROOT}${volume}`);
    // The image's own config.ts, as built; only what `docker run -e FERRY_RELAY_DOMAINS=example.test` adds.
    // Its own network namespace: the image's port, as the Dockerfile EXPOSEs it, clashes with nothing here.
    if (!expose.length) throw new Error("the Dockerfile EXPOSEs no port");
    netns = await makeNetns();
    console.log(
      `network namespace ${netns.name}: the container is ${netns.address}, the host ${netns.hostAddress}`,
    );
    const runEnv = { HOME: "/srv/ferry", ...env, FERRY_RELAY_DOMAINS: "example.test" };
    child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        netns.name,
        ...inRoot(`exec ${cmd.map((c) => `'${c}'`).join(" ")}`, user, dir, runEnv),
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const lines: string[] = [];
    const collect = async (r: ReadableStream<Uint8Array>) => {
      for await (const chunk of r.pipeThrough(new TextDecoderStream())) lines.push(...chunk.split("\n"));
    };
    const done = Promise.all([collect(child.stdout), collect(child.stderr)]);
    const deadline = Date.now() + 120_000;
    while (!lines.some((l) => l.includes("Ferry started"))) {
      if (Date.now() > deadline) throw new Error(`Ferry did not start:\n${lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    let pid = 0;
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const root = await Deno.readLink(`/proc/${e.name}/root`).catch(() => "");
      const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
      if (root === ROOT && cmdline.includes("mod.ts")) pid = Number(e.name);
    }
    if (!pid) throw new Error("cannot find the Ferry process in the chroot");
    {
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      const ruid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
      console.log(`Ferry runs as uid ${ruid} (ferry is ${uid})`);
      if (ruid !== uid) throw new Error(`Ferry runs as uid ${ruid}, not as ferry (${uid})`);
    }

    step(`swaks from outside the container to the EXPOSEd port ${expose[0]}`);
    const swaks = await sh([
      "swaks",
      "--server",
      `${netns.address}:${expose[0]}`,
      "--from",
      "outside@client.test",
      "--to",
      "user@example.test",
      "--header",
      "Subject: container check",
    ]);
    const id = /250 2\.0\.0 OK id=(\S+)/.exec(swaks)?.[1];
    if (!id) throw new Error("no 250 for the message");
    const spoolFiles = [...Deno.readDirSync(spool)].map((e) => e.name);
    console.log(`spool on the host side of the bind mount: ${spoolFiles.join(", ")}`);
    if (!spoolFiles.includes("spool.db")) throw new Error("the spool is not on the bind mount");

    step("SIGTERM");
    child.kill("SIGTERM");
    const status = await child.status;
    await done;
    console.log(lines.filter((l) => /<=|stopping|stopped/.test(l)).join("\n"));
    if (status.code !== 0) throw new Error(`exit code ${status.code} after SIGTERM`);
    const received = lines.find((l) => l.includes(`${id} <= outside@client.test`));
    if (!received) throw new Error("no <= line for the message");
    // Seen from inside, the client is the host end of the veth pair: it came from outside the container.
    if (!received.includes(`[${netns.hostAddress}]`)) throw new Error(`not from outside: ${received}`);
    if (!lines.some((l) => l.includes("Ferry stopped"))) throw new Error("no graceful stop");
    child = undefined;
    await Deno.remove(spool, { recursive: true }).catch(() => {});
    console.log("\ncontainer check passed");
  } finally {
    try {
      child?.kill("SIGKILL");
    } catch { /* gone */ }
    await child?.status.catch(() => {});
    await netns?.remove();
    await unmountAll();
  }
}

try {
  await main();
} catch (err) {
  await unmountAll();
  console.error(`container check FAILED: ${err instanceof Error ? err.message : String(err)}`);
  Deno.exit(1);
}
