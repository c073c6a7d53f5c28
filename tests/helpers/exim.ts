/**
 * Test helper: Debian's Exim 4 unpacked (not installed: it conflicts with postfix) by .ci/exim-unpack.sh,
 * run as `exim -C CONF -bh IP`: one scripted SMTP session through Exim's ACLs on stdin/stdout, replies read
 * back line by line. Needs root or sudo (Exim's spool belongs to the Debian-exim user the script creates).
 */

import { REPO_DIR } from "./process.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Unpacks Exim if needed; returns the binary's path. */
export async function ensureExim(): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: [`${REPO_DIR}.ci/exim-unpack.sh`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`exim-unpack.sh failed: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout).trim().split("\n").at(-1)!;
}

/** A private Exim config dir (spool and log owned by Debian-exim). `acl` is the text after `begin acl`. */
export async function eximConfig(exim: string, mainSection: string, acl: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-exim-" });
  // Exim drops to Debian-exim: it must be able to reach its spool inside the (0700) temp dir.
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/spool`);
  await Deno.mkdir(`${dir}/log`);
  const id = await new Deno.Command("id", { args: ["-u", "Debian-exim"], stdout: "piped" }).output();
  const gid = await new Deno.Command("id", { args: ["-g", "Debian-exim"], stdout: "piped" }).output();
  const [u, g] = [Number(dec.decode(id.stdout)), Number(dec.decode(gid.stdout))];
  if (Deno.uid() === 0) {
    await Deno.chown(`${dir}/spool`, u, g);
    await Deno.chown(`${dir}/log`, u, g);
  } else {
    // CI may run the tests as a user with sudo (.ci/run does).
    const out = await new Deno.Command("sudo", {
      args: ["-n", "chown", `${u}:${g}`, `${dir}/spool`, `${dir}/log`],
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`chown to Debian-exim needs root or sudo: ${dec.decode(out.stderr)}`);
  }
  await Deno.writeTextFile(
    `${dir}/exim.conf`,
    [
      `exim_path = ${exim}`,
      `spool_directory = ${dir}/spool`,
      `log_file_path = ${dir}/log/%slog`,
      "primary_hostname = exim.test",
      mainSection,
      "begin acl",
      acl,
      "",
    ].join("\n"),
  );
  return dir;
}

/** One `exim -bh` session: send a line, read the reply's last line. */
export class EximSession {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = "";

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#reader = child.stdout.getReader();
  }

  /** Starts a session as if from `ip`; reads the banner. */
  static async start(exim: string, dir: string, ip = "127.0.0.1"): Promise<EximSession> {
    const child = new Deno.Command(exim, {
      args: ["-C", `${dir}/exim.conf`, "-bh", ip],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const s = new EximSession(child);
    await s.reply();
    return s;
  }

  /** Reads one reply; returns its final line (`250 …`). */
  async reply(): Promise<string> {
    for (;;) {
      const lines = this.#buf.split("\n");
      for (let i = 0; i < lines.length - 1; i++) {
        if (/^\d{3} /.test(lines[i])) {
          this.#buf = lines.slice(i + 1).join("\n");
          return lines[i].replace(/\r$/, "");
        }
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`exim ended the session; output: ${this.#buf}`);
      this.#buf += dec.decode(value, { stream: true });
    }
  }

  /** Sends a command and returns its reply's final line. */
  async cmd(line: string): Promise<string> {
    await this.#writer.write(enc.encode(line + "\r\n"));
    return await this.reply();
  }

  /** Ends the session and waits for Exim's exit. */
  async close(): Promise<void> {
    try {
      await this.#writer.write(enc.encode("QUIT\r\n"));
      await this.#writer.close();
    } catch { /* gone */ }
    await this.#reader.cancel().catch(() => {});
    await this.#child.status;
  }
}

/** One `ratelimit` hints-db record as exim_dumpdb prints it. */
export interface EximRateRecord {
  /** Seconds since the epoch, to the microsecond */
  time: number;
  /** The stored rate, to 0.001 */
  rate: number;
}

/** Reads Exim's ratelimit hints database (exim_dumpdb, beside the exim binary) by key. */
export async function eximRateRecords(exim: string, dir: string): Promise<Map<string, EximRateRecord>> {
  const dumpdb = exim.replace(/[^/]+$/, "exim_dumpdb");
  const out = await new Deno.Command(dumpdb, {
    args: [`${dir}/spool`, "ratelimit"],
    env: { TZ: "UTC" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const records = new Map<string, EximRateRecord>();
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  for (const line of dec.decode(out.stdout).split("\n")) {
    const m = /^(\d\d)-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d)\.(\d{6}) rate:\s+([\d.]+) .*key: (.*)$/.exec(
      line,
    );
    if (!m) continue;
    const secs = Date.UTC(+m[3], months.indexOf(m[2]), +m[1], +m[4], +m[5], +m[6]) / 1000;
    records.set(m[9], { time: secs + Number(m[7]) / 1e6, rate: Number(m[8]) });
  }
  return records;
}
