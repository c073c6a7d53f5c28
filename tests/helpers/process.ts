/**
 * Test harness for whole-program runs: writes a config file into a temp dir and starts Ferry as a child
 * process (`deno run --allow-all mod.ts --config FILE`), the way an operator does. Trusts nothing the child
 * says: readiness is a 220 banner on the port, output is collected for assertions.
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import { RawClient } from "./ferry.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";

/** `file://` URL of the repository's mod.ts, computed from this file so any clone location works. */
export const MOD_URL: string = new URL("../../mod.ts", import.meta.url).href;
/** The repository root (where deno.json is), used as the child's working directory. */
export const REPO_DIR: string = fromFileUrl(new URL("../../", import.meta.url));

const dec = new TextDecoder();

/**
 * Where {@link freePort} notes the ports it handed out, one empty file per port, shared by every test
 * module and process of the run (`deno test --parallel` runs modules side by side).
 */
const PORT_NOTES = `${Deno.env.get("TMPDIR") || "/tmp"}/ferry-test-ports`;
/** A note older than this no longer reserves its port: its owner bound it long ago, or has gone. */
const PORT_NOTE_MS = 120_000;

/**
 * A free TCP port on `hostname` (listen on port 0, read the port, close) that no other freePort() of this
 * run handed out in the last two minutes. Linux picks port-0 binds at random, so two test modules could get
 * the same port a moment apart and the slower peer then failed to bind, or the faster one's client talked to
 * the wrong server; a note file made with createNew settles who got it.
 */
export function freePort(hostname = "127.0.0.1"): number {
  Deno.mkdirSync(PORT_NOTES, { recursive: true });
  for (let i = 0;; i++) {
    const l = Deno.listen({ hostname, port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const note = `${PORT_NOTES}/${port}`;
    try {
      Deno.openSync(note, { write: true, createNew: true }).close();
      return port;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const mtime = Deno.statSync(note).mtime?.getTime() ?? 0;
    if (Date.now() - mtime > PORT_NOTE_MS || i >= 100) {
      const now = new Date();
      Deno.utimeSync(note, now, now);
      return port;
    }
  }
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Writes `<dir>/<name>` as a config module: `export default defineConfig(<literal>)` with `defineConfig`
 * imported from this clone's mod.ts. `literal` is TypeScript source of an object literal.
 */
export async function writeConfig(
  dir: string,
  literal: string,
  name = "ferry.config.ts",
  imports: readonly string[] = [],
): Promise<string> {
  const path = `${dir}/${name}`;
  const names = ["defineConfig", ...imports].join(", ");
  await Deno.writeTextFile(
    path,
    `import { ${names} } from ${JSON.stringify(MOD_URL)};\n\nexport default defineConfig(${literal});\n`,
  );
  return path;
}

/** Exit status and output of a finished run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the Ferry command line to completion (for `--check-config` and config errors); killed after `timeoutMs` (generous: a loaded machine starts Deno slowly). */
export async function runFerryCli(args: string[], timeoutMs = 60_000): Promise<CliResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", fromFileUrl(MOD_URL), ...args],
    cwd: REPO_DIR,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  try {
    const out = await child.output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** Options of {@link FerryProcess.start}. */
export interface FerryProcessOptions {
  /** Directory for the config file and spool; a new temp dir when absent (then removed by `cleanup()`) */
  dir?: string;
  /** Extra top-level config properties as TypeScript source (`log: { file: "…" }, limits: {…},`) */
  extra?: string | ((ctx: { port: number; dir: string }) => string);
  /** Top-level properties that replace a default, by key, as TypeScript source (`{ delivery: "{…}" }`) */
  set?: Record<string, string>;
  /** Port to listen on (default: a free one; on a start failure another one is tried) */
  port?: number;
  /** More names the config imports from mod.ts (e.g. `["ratelimit", "redisSet"]`) */
  imports?: string[];
  /** `deno run` permission flags (default `["--allow-all"]`; `startTaskFlags()` gives deno.json's) */
  permissions?: string[];
}

/** The permission flags of deno.json's `start` task, the command README.md documents. */
export async function startTaskFlags(): Promise<string[]> {
  const json = JSON.parse(await Deno.readTextFile(`${REPO_DIR}deno.json`));
  const words = String(json.tasks.start).split(/\s+/);
  return words.filter((w) => w.startsWith("--allow-"));
}

/**
 * A Ferry child process. Defaults: hostname "ferry.test", one listener on 127.0.0.1, spool in
 * `<dir>/spool`, relay domain example.test, delivery off (nothing leaves loopback). The readiness probe is
 * a plain connection: with 127.0.0.1 in `proxyRequiredHosts` it waits out `proxyTimeout` and logs one
 * failed PROXY negotiation.
 */
export class FerryProcess {
  /** Where the config file and the spool are */
  readonly dir: string;
  /** The SMTP listener's port */
  readonly port: number;
  /** The generated config file */
  readonly configPath: string;
  /** The `deno run … mod.ts` child */
  readonly child: Deno.ChildProcess;
  #out = "";
  #err = "";
  #ownsDir: boolean;
  #readers: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;
  /**
   * The host name the banner must name, when the config gives it as a literal: a 220 from another server
   * that took the port first (a test's scripted downstream) is not Ferry being ready
   */
  #bannerHost: string | undefined;

  private constructor(
    dir: string,
    port: number,
    configPath: string,
    child: Deno.ChildProcess,
    owns: boolean,
  ) {
    this.dir = dir;
    this.port = port;
    this.configPath = configPath;
    this.child = child;
    this.#ownsDir = owns;
    const pump = async (s: ReadableStream<Uint8Array>, into: "out" | "err") => {
      const d = new TextDecoder();
      try {
        for await (const chunk of s) {
          if (into === "out") this.#out += d.decode(chunk, { stream: true });
          else this.#err += d.decode(chunk, { stream: true });
        }
      } catch { /* child gone */ }
    };
    this.#readers = Promise.all([pump(child.stdout, "out"), pump(child.stderr, "err")]).then(() => {});
    this.#status = child.status.then((s) => (this.#exited = s));
  }

  /** Spool directory (`<dir>/spool`). */
  get spoolDir(): string {
    return `${this.dir}/spool`;
  }

  /** Everything the child wrote to stdout so far (the log, when no log file is set). */
  get stdout(): string {
    return this.#out;
  }

  /** Everything the child wrote to stderr so far. */
  get stderr(): string {
    return this.#err;
  }

  /** The exit status once the child ended, else undefined. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#exited;
  }

  /** Writes the config and starts Ferry; resolves once the port answers with a 220 banner. */
  static async start(opts: FerryProcessOptions = {}): Promise<FerryProcess> {
    const owns = opts.dir === undefined;
    const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "ferry-e2e-" });
    let lastError = "";
    for (let attempt = 0; attempt < 3; attempt++) {
      const p = await FerryProcess.spawn({ ...opts, dir }, owns);
      if (await p.#waitReady(15_000)) return p;
      lastError = `exit ${JSON.stringify(p.#exited)} stderr: ${p.#err} stdout: ${p.#out}`;
      await p.kill();
      if (opts.port !== undefined) break;
    }
    if (owns) await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`Ferry did not start: ${lastError}`);
  }

  /**
   * Writes the config and spawns Ferry without waiting for it to listen (for tests of start-up itself).
   * `ownsDir`: whether `cleanup()` removes `opts.dir`.
   */
  static async spawn(opts: FerryProcessOptions & { dir: string }, ownsDir = false): Promise<FerryProcess> {
    const dir = opts.dir;
    const port = opts.port ?? freePort();
    const extra = typeof opts.extra === "function" ? opts.extra({ port, dir }) : opts.extra ?? "";
    const props: Record<string, string> = {
      hostname: `"ferry.test"`,
      listen: `[{ address: "127.0.0.1", port: ${port} }]`,
      spool: `{ dir: ${JSON.stringify(`${dir}/spool`)} }`,
      relay: `{ domains: ["example.test"] }`,
      delivery: `{ enable: false }`,
      // Parallel children must not fight over the default 127.0.0.1:8025.
      admin: `{ listen: "127.0.0.1:0" }`,
      ...opts.set,
    };
    const literal = `{\n${Object.entries(props).map(([k, v]) => `  ${k}: ${v},\n`).join("")}  ${extra}\n}`;
    const configPath = await writeConfig(dir, literal, undefined, opts.imports);
    let bannerHost: string | undefined;
    try {
      const host = JSON.parse(props.hostname);
      if (typeof host === "string") bannerHost = host;
    } catch { /* an expression: any 220 will do */ }
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...(opts.permissions ?? ["--allow-all"]), fromFileUrl(MOD_URL), "--config", configPath],
      cwd: REPO_DIR,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const p = new FerryProcess(dir, port, configPath, child, ownsDir);
    p.#bannerHost = bannerHost;
    return p;
  }

  /** Polls the port until Ferry's 220 banner arrives (then QUITs); false when the child exited or time ran out. */
  async #waitReady(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && this.#exited === undefined) {
      let conn: Deno.Conn | undefined;
      try {
        conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
        const buf = new Uint8Array(512);
        let got = "";
        while (!got.includes("\n")) {
          const n = await conn.read(buf);
          if (n === null) break;
          got += dec.decode(buf.subarray(0, n));
        }
        if (got.startsWith(this.#bannerHost === undefined ? "220" : `220 ${this.#bannerHost} `)) {
          await conn.write(new TextEncoder().encode("QUIT\r\n")).catch(() => 0);
          return true;
        }
      } catch {
        /* not listening yet */
      } finally {
        try {
          conn?.close();
        } catch { /* closed */ }
      }
      await sleep(30);
    }
    return false;
  }

  /** Sends a signal to the child. */
  signal(sig: Deno.Signal): void {
    this.child.kill(sig);
  }

  /** Waits for the child to exit (at most `ms`); the status, or undefined on timeout. */
  async wait(ms = 15_000): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const s = await Promise.race([
      this.#status,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]).finally(() => clearTimeout(timer));
    if (s) await this.#readers;
    return s;
  }

  /** Waits until the collected stdout (or `read()` when given) matches `re`; returns the match. */
  async waitFor(re: RegExp, ms = 20_000, read?: () => Promise<string>): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const text = read ? await read().catch(() => "") : this.#out;
      const m = re.exec(text);
      if (m) return m;
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${re}; output:\n${text}\nstderr:\n${this.#err}`);
      }
      await sleep(25);
    }
  }

  /** SIGTERM and wait for a clean exit; returns the status. */
  async stop(ms = 15_000): Promise<Deno.CommandStatus> {
    if (this.#exited) return this.#exited;
    this.signal("SIGTERM");
    const s = await this.wait(ms);
    if (!s) throw new Error("Ferry did not exit after SIGTERM");
    return s;
  }

  /** SIGKILL (if still running) and wait for the child to be gone. */
  async kill(): Promise<void> {
    if (this.#exited === undefined) {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await this.#status;
    await this.#readers;
  }

  /** Kills the child if needed and removes the temp dir when this harness made it. */
  async cleanup(): Promise<void> {
    await this.kill();
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Sends one message over a fresh connection (EHLO, MAIL, RCPT, DATA, QUIT); returns the id from the 250. */
export async function sendMessage(
  port: number,
  opts: { from?: string; to?: string; content?: string; helo?: string } = {},
): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    const expect = async (line: string | undefined, code: number) => {
      const r = line === undefined ? await c.reply() : await c.cmd(line);
      if (r?.code !== code) {
        throw new Error(`${line ?? "banner"}: expected ${code}, got ${JSON.stringify(r)}`);
      }
      return r;
    };
    await expect(undefined, 220);
    await expect(`EHLO ${opts.helo ?? "client.test"}`, 250);
    await expect(`MAIL FROM:<${opts.from ?? "a@sender.test"}>`, 250);
    await expect(`RCPT TO:<${opts.to ?? "b@example.test"}>`, 250);
    await expect("DATA", 354);
    const r = await expect(`${opts.content ?? "Subject: test\r\n\r\nbody\r\n"}.`, 250);
    const id = /id=(\S+)/.exec(r.text)?.[1];
    if (!id) throw new Error(`250 without an id: ${r.text}`);
    await c.cmd("QUIT").catch(() => null);
    return id;
  } finally {
    c.close();
  }
}

/** The ids of the messages in a (stopped) Ferry's spool at `dir`. */
export async function spoolIds(dir: string): Promise<string[]> {
  const spool = new SqliteSpool({ dir, thread: "main" });
  await spool.open();
  try {
    return (await spool.list()).map((e) => e.envelope.id);
  } finally {
    await spool.close();
  }
}
