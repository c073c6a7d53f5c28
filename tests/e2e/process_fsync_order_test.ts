/**
 * Durability seen from the kernel: Ferry runs under `strace -f` (the spool's Worker thread included) and the
 * order of its system calls must show, for every message, the commit that stores it (the WAL pages carrying
 * its id, written by pwrite64) synced by fsync/fdatasync on that file before the `250 … id=<id>` is sent.
 * A SIGKILL test cannot see a missing fsync (the page cache survives it); this one can.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { RawClient } from "../helpers/ferry.ts";
import { freePort, MOD_URL, REPO_DIR, sendMessage, sleep, writeConfig } from "../helpers/process.ts";

/** One system call as strace logged it, with the position of its completion in the trace. */
interface Call {
  pid: string;
  name: string;
  /** The text between the parentheses (the entry part, for an unfinished call) */
  args: string;
  /** Line index where the call started and where it returned */
  start: number;
  end: number;
}

/** Parses `strace -f -o` output ("PID name(args) = ret", "<unfinished ...>" / "<... name resumed>"). */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, Call>();
  text.split("\n").forEach((line, i) => {
    const resumed = /^(\d+)\s+<\.\.\. (\w+) resumed>/.exec(line);
    if (resumed) {
      const c = open.get(resumed[1]);
      if (c && c.name === resumed[2]) {
        c.end = i;
        open.delete(resumed[1]);
      }
      return;
    }
    const m = /^(\d+)\s+(\w+)\((.*)$/.exec(line);
    if (!m) return;
    const call: Call = { pid: m[1], name: m[2], args: m[3], start: i, end: i };
    calls.push(call);
    if (/ <unfinished \.\.\.>$/.test(line)) {
      call.end = Number.POSITIVE_INFINITY;
      open.set(m[1], call);
    }
  });
  return calls;
}

/** The file descriptor a call's first argument names. */
function fd(c: Call): string {
  return /^(\d+)/.exec(c.args)?.[1] ?? "";
}

/**
 * For each id, the problem with the order of its calls, if any: no write of it found, no reply, or no
 * completed sync of the written file between the (last) write and the reply.
 */
function orderProblems(calls: Call[], ids: string[]): string[] {
  const problems: string[] = [];
  for (const id of ids) {
    const reply = calls.find((c) =>
      /^(sendto|write|writev|sendmsg)$/.test(c.name) && c.args.includes(`OK id=${id}`)
    );
    if (!reply) {
      problems.push(`${id}: no 250 reply in the trace`);
      continue;
    }
    // The commit is what went into the WAL; a checkpoint copying the page on into spool.db itself (strace -y
    // names the file) is not the commit, and is synced by the checkpoint's own rules.
    const writes = calls.filter((c) =>
      c.name === "pwrite64" && c.end < reply.start && c.args.includes(id) &&
      !/^\d+<[^>]*\/spool\.db>/.test(c.args)
    );
    const last = writes.at(-1);
    if (!last) {
      problems.push(`${id}: no pwrite64 carrying it before its 250`);
      continue;
    }
    const synced = calls.some((c) =>
      (c.name === "fsync" || c.name === "fdatasync") && fd(c) === fd(last) && c.start > last.end &&
      c.end < reply.start
    );
    if (!synced) {
      problems.push(`${id}: 250 sent (trace line ${reply.start}) before fd ${fd(last)} was synced`);
    }
  }
  return problems;
}

Deno.test("parseTrace() and orderProblems() flag a 250 sent before the sync that completes the commit", () => {
  const ok = [
    `10 pwrite64(30, "..1xAAAA-000000000001-0001..", 4096, 0) = 4096`,
    `10 fsync(30 <unfinished ...>`,
    `11 sendto(33, "354 go\\r\\n", 8, MSG_NOSIGNAL, NULL, 0) = 8`,
    `10 <... fsync resumed>)                = 0`,
    `11 sendto(33, "250 2.0.0 OK id=1xAAAA-000000000001-0001\\r\\n", 41, MSG_NOSIGNAL, NULL, 0) = 41`,
  ].join("\n");
  assert.deepEqual(orderProblems(parseTrace(ok), ["1xAAAA-000000000001-0001"]), []);
  // The same calls, but the reply goes out while the fsync is still running.
  const early = [
    `10 pwrite64(30, "..1xAAAA-000000000001-0001..", 4096, 0) = 4096`,
    `10 fsync(30 <unfinished ...>`,
    `11 sendto(33, "250 2.0.0 OK id=1xAAAA-000000000001-0001\\r\\n", 41, MSG_NOSIGNAL, NULL, 0) = 41`,
    `10 <... fsync resumed>)                = 0`,
  ].join("\n");
  assert.equal(orderProblems(parseTrace(early), ["1xAAAA-000000000001-0001"]).length, 1);
  // A sync of another file does not count.
  const otherFile = ok.replace("fsync(30", "fsync(31");
  assert.equal(orderProblems(parseTrace(otherFile), ["1xAAAA-000000000001-0001"]).length, 1);
  // A checkpoint's copy of the page into spool.db (another thread, not yet synced) is not the commit.
  const copied = [
    `10 pwrite64(30</s/spool.db-wal>, "..1xAAAA-000000000001-0001..", 4096, 0) = 4096`,
    `10 fsync(30</s/spool.db-wal>) = 0`,
    `12 pwrite64(45</s/spool.db>, "..1xAAAA-000000000001-0001..", 4096, 8192) = 4096`,
    `11 sendto(33, "250 2.0.0 OK id=1xAAAA-000000000001-0001\\r\\n", 41, MSG_NOSIGNAL, NULL, 0) = 41`,
  ].join("\n");
  assert.deepEqual(orderProblems(parseTrace(copied), ["1xAAAA-000000000001-0001"]), []);
});

/**
 * The pid of strace's tracee: the child that runs Deno with `config` (strace may fork a short-lived probe
 * first, to test seccomp filtering).
 */
async function tracee(stracePid: number, config: string): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const kids = (await Deno.readTextFile(`/proc/${stracePid}/task/${stracePid}/children`).catch(() => ""))
      .trim().split(/\s+/).filter(Boolean).map(Number);
    for (const pid of kids) {
      // argv[0] tells them apart: a forked strace still has strace's command line (which names the config).
      const argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "")).split("\0");
      if (argv[0] === Deno.execPath() && argv.includes(config)) return pid;
    }
    await sleep(25);
  }
  throw new Error("strace did not start Ferry");
}

/** True while `pid` runs. */
function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

/** Waits for the banner naming `hostname` (so a port taken meanwhile by another program is not mistaken). */
async function banner(port: number, hostname: string, ferryPid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!alive(ferryPid)) throw new Error("Ferry exited before it listened");
    try {
      const c = await RawClient.connect(port);
      const r = await c.reply(5000).catch(() => null);
      c.close();
      if (r?.code === 220) {
        if (!r.text.startsWith(hostname)) throw new Error(`port ${port} is someone else's: ${r.text}`);
        return;
      }
    } catch (err) {
      if (err instanceof Error && err.message.includes("someone else")) throw err;
    }
    if (Date.now() > deadline) throw new Error("no banner under strace");
    await sleep(100);
  }
}

/** Waits for `p` at most `ms`; undefined when the time ran out. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))])
    .finally(() => clearTimeout(timer));
}

Deno.test("under strace, every 250 for a message leaves only after the commit storing it was synced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-strace-" });
  const hostname = `strace-${crypto.randomUUID().slice(0, 8)}.test`;
  const port = freePort();
  const config = await writeConfig(
    dir,
    `{ hostname: ${JSON.stringify(hostname)}, listen: [{ address: "127.0.0.1", port: ${port} }],
      spool: { dir: ${JSON.stringify(`${dir}/spool`)} }, relay: { domains: ["example.test"] },
      // Not the default 127.0.0.1:8025: another test's Ferry may hold it (Ferry then exits 78).
      delivery: { enable: false }, admin: { enable: false } }`,
  );
  const trace = `${dir}/trace`;
  // Output goes nowhere but the trace file: a pipe would outlive strace in the tracee and hang the test.
  const child = new Deno.Command("strace", {
    args: [
      "-f",
      "--seccomp-bpf", // stop only at the traced calls: Ferry runs at nearly full speed
      "-qq",
      "-y", // file descriptors with their paths: the WAL apart from spool.db
      "-s",
      "16384", // a whole WAL page, so the message's id is seen in what pwrite64 wrote
      "-e",
      "trace=pwrite64,write,writev,sendto,sendmsg,fsync,fdatasync",
      "-o",
      trace,
      Deno.execPath(),
      "run",
      "--allow-all",
      fileURLToPath(MOD_URL),
      "--config",
      config,
    ],
    cwd: REPO_DIR,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let ferryPid: number | undefined;
  try {
    ferryPid = await tracee(child.pid, config);
    await banner(port, hostname, ferryPid, 60_000);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        await sendMessage(port, { content: `Subject: strace ${i}\r\n\r\n${"body line\r\n".repeat(20)}` }),
      );
    }
    Deno.kill(ferryPid, "SIGTERM");
    const status = await within(child.status, 60_000);
    assert.equal(status?.code, 0, `Ferry under strace did not stop cleanly: ${JSON.stringify(status)}`);
    const calls = parseTrace(await Deno.readTextFile(trace));
    // The trace saw the spool's worker thread sync: otherwise the check below proves nothing.
    assert.ok(calls.some((c) => c.name === "fsync" || c.name === "fdatasync"), "no fsync in the trace");
    assert.deepEqual(orderProblems(calls, ids), []);
  } finally {
    for (const pid of [ferryPid, child.pid]) {
      try {
        if (pid !== undefined) Deno.kill(pid, "SIGKILL");
      } catch { /* exited */ }
    }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
