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
    const writes = calls.filter((c) => c.name === "pwrite64" && c.end < reply.start && c.args.includes(id));
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
});

/** The pid of the only child of `pid` (strace's tracee). */
async function childOf(pid: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const kids = (await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`).catch(() => "")).trim();
    if (kids) return Number(kids.split(/\s+/)[0]);
    await sleep(25);
  }
  throw new Error("strace started no child");
}

async function banner(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const c = await RawClient.connect(port);
      const r = await c.reply(5000).catch(() => null);
      c.close();
      if (r?.code === 220) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error("no banner under strace");
    await sleep(100);
  }
}

Deno.test("under strace, every 250 for a message leaves only after the commit storing it was synced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-strace-" });
  const port = freePort();
  const config = await writeConfig(
    dir,
    `{ hostname: "ferry.test", listen: [{ address: "127.0.0.1", port: ${port} }],
      spool: { dir: ${JSON.stringify(`${dir}/spool`)} }, relay: { domains: ["example.test"] },
      delivery: { enable: false } }`,
  );
  const trace = `${dir}/trace`;
  const child = new Deno.Command("strace", {
    args: [
      "-f",
      "-qq",
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
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    const ferryPid = await childOf(child.pid);
    await banner(port, 30_000);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        await sendMessage(port, { content: `Subject: strace ${i}\r\n\r\n${"body line\r\n".repeat(20)}` }),
      );
    }
    Deno.kill(ferryPid, "SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0, await stderr);
    const calls = parseTrace(await Deno.readTextFile(trace));
    // The trace saw the spool's worker thread sync: otherwise the check below proves nothing.
    assert.ok(calls.some((c) => c.name === "fsync" || c.name === "fdatasync"), "no fsync in the trace");
    assert.deepEqual(orderProblems(calls, ids), []);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await stderr.catch(() => "");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
