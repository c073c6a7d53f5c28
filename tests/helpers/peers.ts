/**
 * Test helpers that run real SMTP peers (swaks, Python's smtplib or a raw Python socket) against a Ferry
 * on loopback. Every child runs under a deadline and is killed when the deadline passes.
 */

/** What a finished peer process left behind. */
export interface PeerResult {
  /** Exit code (a killed child reports a non-zero code) */
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for running a peer. */
export interface PeerOptions {
  /** Kill the child after this many milliseconds (default 8000) */
  timeoutMs?: number;
  /** Text written to the child's standard input */
  stdin?: string;
}

const dec = new TextDecoder();

async function run(cmd: string, args: string[], opts: PeerOptions = {}): Promise<PeerResult> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: { LC_ALL: "C", PYTHONDONTWRITEBYTECODE: "1" },
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, opts.timeoutMs ?? 8000);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(opts.stdin));
      await w.close();
    }
    const out = await child.output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }
}

/** Runs swaks against 127.0.0.1:`port` with `args` added (e.g. `["--to", "a@b", "--pipeline"]`). */
export function runSwaks(port: number, args: string[], opts?: PeerOptions): Promise<PeerResult> {
  return run(
    "swaks",
    ["--server", `127.0.0.1:${port}`, "--timeout", "5", "--hide-informational", ...args],
    opts,
  );
}

/** One message sent with SMTP AUTH, as swaks arguments. */
export interface SwaksAuthMessage {
  /** STARTTLS first (`--tls`), or TLS from the start (`--tlsc`, smtps); plaintext when absent */
  tls?: "starttls" | "smtps";
  from: string;
  to: string;
  mechanism: "PLAIN" | "LOGIN";
  user: string;
  password: string;
}

/** The swaks arguments for `m` (for {@link runSwaks}; more may follow). */
export function swaksAuthArgs(m: SwaksAuthMessage): string[] {
  const tls = m.tls === "starttls" ? ["--tls"] : m.tls === "smtps" ? ["--tlsc"] : [];
  return [
    ...tls,
    ...["--from", m.from, "--to", m.to],
    ...["--auth", m.mechanism, "--auth-user", m.user, "--auth-password", m.password],
  ];
}

/** Runs a Python 3 script given as text; `args` become sys.argv[1:]. */
export function runPython(script: string, args: string[] = [], opts?: PeerOptions): Promise<PeerResult> {
  return run("python3", ["-c", script, ...args], opts);
}

/** Extracts the spool id from a `250 2.0.0 OK id=…` reply found anywhere in a peer's output. */
export function spoolIdIn(text: string): string | undefined {
  return /\b250[ -](?:2\.0\.0 )?OK id=([A-Za-z0-9-]+)/.exec(text)?.[1];
}
