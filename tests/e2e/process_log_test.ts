/**
 * The main log on the real process: a stdout pipe nobody reads must not stall sessions (the log is written
 * asynchronously from a bounded queue), and a clean stop writes out every line queued before it.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { RawClient } from "../helpers/ferry.ts";
import { freePort, MOD_URL, REPO_DIR, sleep, writeConfig } from "../helpers/process.ts";

const RCPTS = 400;

function recipient(i: number): string {
  // Long addresses (within the 256-octet path limit) make long "rejected RCPT" lines: 400 of them are well over a pipe's 64 KiB.
  return `${"u".repeat(60)}${i}@${"d".repeat(60)}.${"e".repeat(60)}.${"f".repeat(50)}.other.test`;
}

/**
 * A connection that got this Ferry's banner (a port taken meanwhile by another program is not mistaken);
 * fails at once, with what Ferry said, when the process has ended instead.
 */
async function banner(
  port: number,
  hostname: string,
  ms: number,
  ended: () => Promise<string> | undefined,
): Promise<RawClient> {
  const deadline = Date.now() + ms;
  for (;;) {
    const why = ended();
    if (why !== undefined) throw new Error(`Ferry ended before its banner: ${await why}`);
    let c: RawClient | undefined;
    try {
      c = await RawClient.connect(port);
      const r = await c.reply(2000);
      if (r?.code === 220 && r.text.startsWith(hostname)) return c;
      if (r?.code === 220) throw new Error(`port ${port} is someone else's: ${r.text}`);
    } catch (err) {
      if (err instanceof Error && err.message.includes("someone else")) throw err;
    }
    c?.close();
    if (Date.now() > deadline) throw new Error("no banner");
    await sleep(50);
  }
}

Deno.test("a stdout pipe nobody reads does not stall sessions, and every line logged before SIGTERM is written on stop", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-log-" });
  const port = freePort();
  const hostname = `pipe-${crypto.randomUUID().slice(0, 8)}.test`;
  const config = await writeConfig(
    dir,
    `{ hostname: ${JSON.stringify(hostname)}, listen: [{ address: "127.0.0.1", port: ${port} }],
      spool: { dir: ${JSON.stringify(`${dir}/spool`)} }, relay: { domains: ["example.test"], clients: [] },
      delivery: { enable: false }, limits: { recipients: 1000, badCommands: 1000 },
      // Not the default 127.0.0.1:8025: another test's Ferry may hold it (Ferry then exits 78).
      admin: { enable: false } }`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", fileURLToPath(MOD_URL), "--config", config],
    cwd: REPO_DIR,
    stdin: "null",
    stdout: "piped", // read only after the stop: the pipe fills up and stays full meanwhile
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let exit: Deno.CommandStatus | undefined;
  child.status.then((st) => (exit = st));
  const ended = () => exit && stderr.then((text) => `exit ${exit!.code}: ${text}`);
  let stdout: Promise<string> | undefined;
  try {
    const c = await banner(port, hostname, 20_000, ended);
    try {
      assert.equal((await c.cmd("EHLO pipe.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      const cmds = Array.from({ length: RCPTS }, (_, i) => `RCPT TO:<${recipient(i)}>\r\n`).join("");
      await c.send(cmds);
      for (let i = 0; i < RCPTS; i++) {
        const r = await c.reply(10_000);
        assert.ok(r && r.code >= 500, `reply ${i}: ${JSON.stringify(r)}`);
      }
      assert.equal((await c.cmd("QUIT"))?.code, 221);
    } finally {
      c.close();
    }
    // A new session is served while the pipe is still full.
    const d = await banner(port, hostname, 5000, ended);
    assert.equal((await d.cmd("NOOP"))?.code, 250);
    d.close();

    child.kill("SIGTERM");
    stdout = new Response(child.stdout).text();
    const status = await child.status;
    const out = await stdout;
    assert.equal(status.code, 0, await stderr);
    assert.ok(out.length > 65_536, `only ${out.length} octets logged: the pipe never filled`);
    const lines = out.trimEnd().split("\n");
    for (let i = 0; i < RCPTS; i++) {
      const addr = recipient(i);
      assert.ok(lines.some((l) => l.includes(`rejected RCPT <${addr}>`)), `no log line for recipient ${i}`);
    }
    assert.match(lines.at(-1)!, /Ferry stopped$/);
    assert.doesNotMatch(out, /dropped/);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await (stdout ?? new Response(child.stdout).text().catch(() => ""));
    await stderr.catch(() => "");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
