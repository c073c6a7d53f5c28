/**
 * The `queue` command line against a running Ferry process (through its control socket) and against the
 * spool of a stopped one: list, show, hold, release, retry, flush, bounce, delete, summary; human output
 * and --json.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { FerryProcess, freePort, REPO_DIR, sendMessage } from "../helpers/process.ts";

const CLI = fileURLToPath(new URL("../../src/queue_cli.ts", import.meta.url));
const dec = new TextDecoder();

async function queue(
  configPath: string,
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, "--config", configPath, ...args],
    cwd: REPO_DIR,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

async function json<T>(configPath: string, ...args: string[]): Promise<T> {
  const r = await queue(configPath, "--json", ...args);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as T;
}

interface Row {
  id: string;
  state: string;
  pending: number;
}

Deno.test("the queue command operates a running Ferry: list, show, hold, release, retry, flush, bounce, delete", async () => {
  const dead = freePort();
  const ferry = await FerryProcess.start({
    set: {
      delivery: `{ enable: true, queueInterval: "1h" }`,
      routes: `[{ domains: "*", hosts: ["127.0.0.1"], port: ${dead} }]`,
      retry: `[{ domains: "*", rules: [{ every: "1h", until: "1d" }] }]`,
    },
  });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await sendMessage(ferry.port, { content: `Subject: n${i}\r\n\r\nbody ${i}\r\n` }));
    }
    await ferry.waitFor(new RegExp(`${ids[2]} == `));
    const deferred = await json<Row[]>(ferry.configPath, "list", "--state", "deferred");
    assert.deepEqual(deferred.map((r) => r.id).sort(), [...ids].sort());

    // Human output: one line a message, like mailq.
    const human = await queue(ferry.configPath, "list");
    assert.equal(human.code, 0, human.err);
    assert.match(human.out, new RegExp(`^${ids[0]} +deferred .* 1/1 pending, next in \\d+[mh]`, "m"));

    const show = await queue(ferry.configPath, "show", ids[0]);
    assert.match(show.out, /sender <a@sender.test>/);
    assert.match(show.out, /pending +<b@example.test> attempts 1, next in \d+[mh], last: .*refused/i);
    assert.match(show.out, /Subject: n0/);

    const held = await queue(ferry.configPath, "hold", ids[0], "nonexistent");
    assert.equal(held.code, 1, "one of the two was refused");
    assert.match(held.out, new RegExp(`${ids[0]}: held\\nnonexistent: not done: not in the queue`));
    assert.deepEqual((await json<Row[]>(ferry.configPath, "list", "--state", "hold")).map((r) => r.id), [
      ids[0],
    ]);
    await ferry.waitFor(new RegExp(`${ids[0]} held by operator`));

    assert.equal((await queue(ferry.configPath, "release", ids[0])).code, 0);
    assert.equal((await json<Row[]>(ferry.configPath, "list", "--state", "hold")).length, 0);

    // Retry now: attempted again at once instead of in an hour.
    assert.equal((await queue(ferry.configPath, "retry", ids[1])).code, 0);
    await ferry.waitFor(new RegExp(`${ids[1]} retry now requested by operator`));
    await ferry.waitFor(new RegExp(`${ids[1]} == [\\s\\S]*${ids[1]} == `));

    const flushed = await queue(ferry.configPath, "flush");
    assert.match(flushed.out, /3 message\(s\) due now/);

    const bounced = await json<{ ok: boolean; message: string }[]>(ferry.configPath, "bounce", ids[1]);
    assert.equal(bounced[0].ok, true, bounced[0].message);
    await ferry.waitFor(
      new RegExp(`R=${ids[1]} U=ferry P=local S=\\d+ for a@sender.test \\(failure report\\)`),
    );
    assert.equal((await queue(ferry.configPath, "delete", ids[2])).code, 0);

    const summary = await json<{ byState: Record<string, number> }>(ferry.configPath, "summary");
    // ids[0] and the report to a@sender.test remain (both deferred or being tried).
    const total = Object.values(summary.byState).reduce((a, b) => a + b, 0);
    assert.equal(total, 2);
    assert.equal((await queue(ferry.configPath, "show", ids[2])).code, 1, "deleted");
  } finally {
    await ferry.cleanup();
  }
});

Deno.test("the queue command works on a stopped Ferry's spool, which the next start honours", async () => {
  const first = await FerryProcess.start();
  let second: FerryProcess | undefined;
  try {
    const id = await sendMessage(first.port);
    assert.equal((await first.stop()).code, 0);
    const held = await queue(first.configPath, "hold", id);
    assert.equal(held.code, 0, held.err);
    assert.match(held.out, new RegExp(`${id}: held`));
    const list = await json<Row[]>(first.configPath, "list");
    assert.deepEqual(list.map((r) => [r.id, r.state]), [[id, "hold"]]);
    const bad = await queue(first.configPath, "list", "--state", "frozen");
    assert.equal(bad.code, 64);
    assert.match(bad.err, /--state: expected incoming, active, deferred, hold or corrupt/);

    second = await FerryProcess.start({ dir: first.dir });
    const again = await json<Row[]>(second.configPath, "list", "--state", "hold");
    assert.deepEqual(again.map((r) => r.id), [id], "answered by the running Ferry, still held");
    assert.equal((await second.stop()).code, 0);
  } finally {
    await second?.cleanup();
    await first.cleanup();
  }
});
