/**
 * The `queue` command line against a running Ferry process, through the admin HTTP API it finds in the spool
 * directory (admin.url, admin.token): list, show, hold, release, retry, flush, bounce (the failure report is
 * delivered to a recording SMTP server), delete, summary; human output and --json; a wrong token, no Ferry
 * running, a stale admin.url, the admin API switched off; `--offline` on a stopped Ferry's spool.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { FerryProcess, freePort, REPO_DIR, sendMessage } from "../helpers/process.ts";
import { startDownstream, waitFor } from "../helpers/downstream.ts";

const CLI = fileURLToPath(new URL("../../src/queue_cli.ts", import.meta.url));
const dec = new TextDecoder();

async function queue(
  configPath: string | undefined,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, ...(configPath ? ["--config", configPath] : []), ...args],
    cwd: REPO_DIR,
    // Nothing inherited may point the command elsewhere.
    env: { FERRY_ADMIN_URL: "", FERRY_ADMIN_TOKEN: "", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

async function json<T>(configPath: string, ...args: string[]): Promise<T> {
  const r = await queue(configPath, ["--json", ...args]);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as T;
}

interface Row {
  id: string;
  state: string;
  pending: number;
}
interface Outcome {
  id: string;
  ok: boolean;
  message: string;
}

const ids = (list: { messages: Row[] }) => list.messages.map((r) => r.id);

Deno.test("the queue command operates a running Ferry over its admin API: list, show, hold, release, retry, flush, bounce, delete", async () => {
  const dead = freePort();
  const recorder = startDownstream();
  const ferry = await FerryProcess.start({
    set: {
      delivery: `{ enable: true, queueInterval: "1h" }`,
      // Failure reports go back to a@sender.test: a live recorder; everything else to a closed port.
      routes: `[{ domains: "sender.test", hosts: ["127.0.0.1"], port: ${recorder.port} }, ` +
        `{ domains: "*", hosts: ["127.0.0.1"], port: ${dead} }]`,
      retry: `[{ domains: "*", rules: [{ every: "1h", until: "1d" }] }]`,
    },
  });
  try {
    // Ferry published where its API answers, readable by its owner only.
    const urlFile = `${ferry.dir}/spool/admin.url`;
    assert.match(await Deno.readTextFile(urlFile), /^http:\/\/127\.0\.0\.1:\d+\n$/);
    assert.equal((await Deno.stat(urlFile)).mode! & 0o777, 0o600);

    const sent: string[] = [];
    for (let i = 0; i < 3; i++) {
      sent.push(await sendMessage(ferry.port, { content: `Subject: n${i}\r\n\r\nbody ${i}\r\n` }));
    }
    await ferry.waitFor(new RegExp(`${sent[2]} == `), 15_000);
    await ferry.waitFor(new RegExp(`${sent[0]} == [\\s\\S]*${sent[1]} == `), 15_000);
    const deferred = await json<{ messages: Row[] }>(ferry.configPath, "list", "--state", "deferred");
    assert.deepEqual(ids(deferred).sort(), [...sent].sort());
    const paged = await json<{ messages: Row[]; next: string }>(ferry.configPath, "list", "--limit", "2");
    assert.deepEqual([ids(paged), paged.next], [sent.slice(0, 2), sent[1]]);
    const rest = await json<{ messages: Row[] }>(ferry.configPath, "list", "--after", paged.next);
    assert.deepEqual(ids(rest), [sent[2]]);
    assert.equal(ids(await json(ferry.configPath, "list", "--older-than", "1h")).length, 0);
    assert.equal(
      ids(await json(ferry.configPath, "list", "--newer-than", "1h", "--sender", "a@sender.test")).length,
      3,
    );

    // Human output: one line a message, like mailq; a page that is full says how to go on.
    const human = await queue(ferry.configPath, ["list", "--limit", "2"]);
    assert.equal(human.code, 0, human.err);
    assert.match(human.out, new RegExp(`^${sent[0]} +deferred .* 1/1 pending, next in \\d+[mh]`, "m"));
    assert.match(human.out, new RegExp(`\\(more: --after ${sent[1]}\\)`));

    const show = await queue(ferry.configPath, ["show", sent[0]]);
    assert.equal(show.code, 0, show.err);
    assert.match(show.out, / received \S+ from \[127\.0\.0\.1\], \d+ octets\n/, "the envelope's client");
    assert.match(show.out, /sender <a@sender.test>/);
    assert.match(show.out, /pending +<b@example.test> attempts 1, next in \d+[mh], last: .*refused/i);
    assert.match(show.out, /Subject: n0/);

    const held = await queue(ferry.configPath, ["hold", sent[0], "nonexistent"]);
    assert.equal(held.code, 1, "one of the two was refused");
    assert.match(held.out, new RegExp(`${sent[0]}: held\\nnonexistent: not done: not in the queue`));
    assert.deepEqual(ids(await json(ferry.configPath, "list", "--state", "hold")), [sent[0]]);
    await ferry.waitFor(new RegExp(`${sent[0]} held by operator`));
    await ferry.waitFor(new RegExp(`admin: hold ${sent[0]}`));

    assert.equal((await queue(ferry.configPath, ["release", sent[0]])).code, 0);
    assert.equal(ids(await json(ferry.configPath, "list", "--state", "hold")).length, 0);

    // Retry now: attempted again at once instead of in an hour.
    assert.equal((await queue(ferry.configPath, ["retry", sent[1]])).code, 0);
    await ferry.waitFor(new RegExp(`${sent[1]} retry now requested by operator`));
    await ferry.waitFor(new RegExp(`${sent[1]} == [\\s\\S]*${sent[1]} == `), 15_000);

    const flushed = await queue(ferry.configPath, ["flush", "example.test"]);
    assert.equal(flushed.code, 0, flushed.err);
    assert.match(flushed.out, /^3 message\(s\) due now$/m);
    await ferry.waitFor(/admin: flush example.test: 3 message\(s\) due now/);

    // Bounce: the failure report reaches the sender's server.
    await waitFor(
      async () => {
        const s = await json<{ messages: Row[] }>(ferry.configPath, "list", "--state", "active");
        return s.messages.length === 0;
      },
      15_000,
      "no delivery in progress",
    );
    // The operator's --reason is logged and is the failure report's reason.
    const bounced = await json<{ results: Outcome[] }>(
      ferry.configPath,
      "bounce",
      "--reason",
      "mailbox moved to the new host",
      sent[1],
    );
    assert.equal(bounced.results[0].ok, true, bounced.results[0].message);
    const reportId = /failure report (\S+) to <a@sender.test>/.exec(bounced.results[0].message)?.[1];
    assert.ok(reportId, bounced.results[0].message);
    await waitFor(() => recorder.messages.length === 1, 15_000, "the failure report delivered");
    const report = recorder.messages[0];
    assert.deepEqual([report.from, report.rcpts], ["", ["a@sender.test"]]);
    assert.match(report.data, /Status: 5\.0\.0/);
    // (Header fields unfolded: the long Diagnostic-Code is folded.)
    assert.match(
      report.data.replace(/\r\n[ \t]+/g, " "),
      /\r\nDiagnostic-Code: x-ferry; bounced by the administrator: mailbox moved to the new host\r\n/,
    );
    await ferry.waitFor(new RegExp(`admin: bounce ${sent[1]} \\(mailbox moved to the new host\\)`));
    assert.match(report.data, /Subject: n1/);
    await ferry.waitFor(new RegExp(`${reportId} Completed`), 15_000);
    assert.equal((await queue(ferry.configPath, ["show", sent[1]])).code, 1, "bounced: gone");

    const del = await queue(ferry.configPath, ["delete", sent[2]]);
    assert.equal(del.code, 0, del.err);
    assert.match(del.out, new RegExp(`^${sent[2]}: deleted$`, "m"));
    const gone = await queue(ferry.configPath, ["show", sent[2]]);
    assert.deepEqual([gone.code, gone.out.trim()], [1, "no such message"]);
    assert.equal(recorder.messages.length, 1, "delete sends no report");
    await ferry.waitFor(new RegExp(`${sent[2]} deleted by operator\n.*${sent[2]} Completed`));

    const summary = await json<{ byState: Record<string, number>; byDomain: { domain: string }[] }>(
      ferry.configPath,
      "summary",
    );
    assert.equal(Object.values(summary.byState).reduce((a, b) => a + b, 0), 1, JSON.stringify(summary));
    assert.deepEqual(summary.byDomain.map((d) => d.domain), ["example.test"]);
    const humanSummary = await queue(ferry.configPath, ["summary"]);
    assert.match(humanSummary.out, /example\.test +1 message\(s\), 1 recipient\(s\)/);

    // A wrong token: refused, nothing changes. --url and --token need no config file at all.
    const url = (await Deno.readTextFile(urlFile)).trim();
    const badToken = await queue(ferry.configPath, ["--token", "wrong-token-wrong-token", "hold", sent[0]]);
    assert.equal(badToken.code, 77);
    assert.match(badToken.err, /refused the token: invalid bearer token/);
    const badEnv = await queue(ferry.configPath, ["hold", sent[0]], {
      FERRY_ADMIN_TOKEN: "also-wrong-token-here",
    });
    assert.equal(badEnv.code, 77);
    assert.notEqual((await json<{ messages: Row[] }>(ferry.configPath, "list")).messages[0].state, "hold");
    const token = (await Deno.readTextFile(`${ferry.dir}/spool/admin.token`)).trim();
    const direct = await queue(undefined, ["--json", "--url", url, "--token", token, "list"]);
    assert.equal(direct.code, 0, direct.err);
    assert.deepEqual(ids(JSON.parse(direct.out)), [sent[0]]);

    assert.equal((await ferry.stop()).code, 0);
    await assert.rejects(Deno.stat(urlFile), Deno.errors.NotFound, "admin.url is removed on stop");
  } finally {
    await ferry.cleanup();
    await recorder.stop();
  }
});

Deno.test("the queue command without a reachable Ferry: a clear error, --offline on the stopped spool, which the next start honours", async () => {
  // First run with the admin API switched off: the command says so instead of guessing.
  const first = await FerryProcess.start({ set: { admin: `{ enable: false }` } });
  let second: FerryProcess | undefined;
  try {
    const id = await sendMessage(first.port);
    const off = await queue(first.configPath, ["list"]);
    assert.equal(off.code, 69);
    assert.match(off.err, /the admin API is off in this configuration \(admin\.enable: false\)/);
    assert.doesNotMatch(off.err, /no Ferry runs on this spool/, "the command sees the running Ferry's lock");
    const busy = await queue(first.configPath, ["--offline", "list"]);
    assert.equal(busy.code, 75);
    assert.match(busy.err, /in use by another Ferry process/);
    assert.equal((await first.stop()).code, 0);

    const none = await queue(first.configPath, ["--spool", `${first.dir}/spool`, "list"]);
    assert.equal(none.code, 69);
    assert.match(
      none.err,
      /no Ferry is running on the spool ".*" \(no .*admin\.url\); start it, or use --offline/,
    );

    const held = await queue(first.configPath, ["--offline", "hold", id]);
    assert.equal(held.code, 0, held.err);
    assert.match(held.out, new RegExp(`${id}: held`));
    const list = await queue(first.configPath, ["--offline", "--json", "list"]);
    assert.deepEqual(JSON.parse(list.out).messages.map((r: Row) => [r.id, r.state]), [[id, "hold"]]);
    const bad = await queue(first.configPath, ["list", "--state", "frozen"]);
    assert.equal(bad.code, 64);
    assert.match(bad.err, /--state: expected incoming, active, deferred, hold or corrupt/);

    // A Ferry with the API on: answered through it, still held.
    second = await FerryProcess.start({ dir: first.dir });
    const again = await json<{ messages: Row[] }>(second.configPath, "list", "--state", "hold");
    assert.deepEqual(ids(again), [id], "answered by the running Ferry, still held");
    const url = (await Deno.readTextFile(`${first.dir}/spool/admin.url`)).trim();
    second.child.kill("SIGKILL");
    await second.wait();
    // Killed: its admin.url stays behind, pointing at nobody.
    const stale = await queue(second.configPath, ["list"]);
    assert.equal(stale.code, 69);
    assert.match(stale.err, /no Ferry is running on the spool .* left from a run that did not stop cleanly/);
    assert.equal((await Deno.readTextFile(`${first.dir}/spool/admin.url`)).trim(), url);
  } finally {
    await second?.cleanup();
    await first.cleanup();
  }
});

Deno.test("retry tries its message's hosts at once even in back-off and at a dead destination: the host came back, the message goes", async () => {
  const port = freePort();
  const ferry = await FerryProcess.start({
    set: {
      delivery: `{ enable: true, queueInterval: "1h", hostRetryBase: "1h", deadDestinationAfter: 2 }`,
      routes: `[{ domains: "*", hosts: ["127.0.0.1"], port: ${port} }]`,
      retry: `[{ domains: "*", rules: [{ every: "1h", until: "1d" }] }]`,
    },
  });
  let sink: ReturnType<typeof startDownstream> | undefined;
  try {
    const first = await sendMessage(ferry.port, { content: "Subject: first\r\n\r\nbody\r\n" });
    await ferry.waitFor(new RegExp(`${first} == .*refused`), 15_000);
    const second = await sendMessage(ferry.port, { content: "Subject: second\r\n\r\nbody\r\n" });
    await ferry.waitFor(new RegExp(`${second} == .*retry time not reached for any host`), 15_000);
    // Two connection failures in a row: the destination is dead, and the host in back-off for an hour.
    const third = await sendMessage(ferry.port, { content: "Subject: third\r\n\r\nbody\r\n" });
    await ferry.waitFor(new RegExp(`${third} == .*destination not responding`), 15_000);

    sink = startDownstream({ port });
    const retried = await queue(ferry.configPath, ["retry", second]);
    assert.equal(retried.code, 0, retried.err);
    await ferry.waitFor(new RegExp(`${second} => `), 15_000);
    await waitFor(() => sink!.messages.length === 1, 15_000, "the retried message delivered");
    assert.match(sink.messages[0].data, /Subject: second/);
    await ferry.waitFor(new RegExp(`${second} Completed`), 15_000);
    // Only the retried message was forced: the others wait for their own retry times.
    const left = await json<{ messages: Row[] }>(ferry.configPath, "list");
    assert.deepEqual(ids(left).sort(), [first, third].sort());
    assert.equal(sink.messages.length, 1);
  } finally {
    await ferry.cleanup();
    await sink?.stop();
  }
});
