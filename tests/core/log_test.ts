import assert from "node:assert/strict";
import { type LogOutput, MainLog, printable } from "../../src/core/log.ts";

const dec = new TextDecoder();

/** An output that accepts nothing until `open()`; then it takes at most `chunk` octets per write. */
class GatedOutput implements LogOutput {
  text = "";
  writes = 0;
  #open = false;
  #waiting: (() => void)[] = [];
  constructor(readonly chunk = 1 << 20) {}
  async write(p: Uint8Array): Promise<number> {
    this.writes++;
    while (!this.#open) await new Promise<void>((r) => this.#waiting.push(r));
    const n = Math.min(p.length, this.chunk);
    this.text += dec.decode(p.subarray(0, n));
    return n;
  }
  open(): void {
    this.#open = true;
    for (const r of this.#waiting.splice(0)) r();
  }
}

Deno.test("MainLog.write() returns while the output is blocked; flush() writes every line in order once it moves", async () => {
  const out = new GatedOutput(100); // partial writes as a pipe gives them
  const log = new MainLog({ format: "exim", output: out });
  for (let i = 0; i < 200; i++) log.write(`line ${i}`);
  assert.equal(out.text, "");
  out.open();
  await log.flush();
  const lines = out.text.trimEnd().split("\n");
  assert.equal(lines.length, 200);
  lines.forEach((l, i) =>
    assert.match(l, new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d line ${i}$`))
  );
  assert.equal(log.dropped, 0);
});

Deno.test("MainLog keeps at most maxBuffered octets while blocked, drops the rest and logs how many", async () => {
  const out = new GatedOutput();
  const log = new MainLog({ format: "json", output: out, maxBuffered: 2000 });
  for (let i = 0; i < 100; i++) log.write(`line ${i}`, { n: i });
  assert.ok(log.dropped > 0 && log.dropped < 100, `dropped ${log.dropped}`);
  const dropped = log.dropped;
  out.open();
  await log.flush();
  const objs = out.text.trimEnd().split("\n").map((l) => JSON.parse(l));
  const kept = objs.filter((o) => typeof o.n === "number");

  assert.equal(kept.length, 100 - dropped);
  assert.deepEqual(kept.map((o) => o.n), Array.from({ length: kept.length }, (_, i) => i));
  const notice = objs.find((o) => o.event === "log_dropped");
  assert.ok(notice, out.text);
  assert.equal(notice.dropped, dropped);
  assert.match(notice.msg, new RegExp(`${dropped} line\\(s\\) dropped`));
  // Once the output moves again, lines are kept again.
  log.write("after");
  await log.flush();
  assert.match(out.text.trimEnd().split("\n").at(-1)!, /"msg":"after"/);
});

Deno.test("MainLog.close() writes out every queued line to the file before closing it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const log = new MainLog({ format: "exim", file: `${dir}/main.log` });
    for (let i = 0; i < 5000; i++) log.write(`line ${i} ${"x".repeat(100)}`);
    await log.close();
    const lines = (await Deno.readTextFile(`${dir}/main.log`)).trimEnd().split("\n");
    assert.equal(lines.length, 5000);
    assert.match(lines[4999], / line 4999 x+$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("MainLog: a line written just as the writer finds its queue empty is written, not left for the next", async () => {
  // The line is written a few promise steps after the first write returns: at some depth it lands between
  // the writer's last look at its queue and the settling of the writer's promise.
  for (let depth = 0; depth < 8; depth++) {
    let text = "";
    let first = true;
    let later: Promise<void> | undefined;
    const log = new MainLog({
      format: "exim",
      output: {
        write(p: Uint8Array): Promise<number> {
          text += dec.decode(p);
          const done = Promise.resolve(p.length);
          if (first) {
            first = false;
            let step: Promise<unknown> = done;
            for (let i = 0; i < depth; i++) step = step.then(() => {});
            later = step.then(() => {
              log.write("late line");
              return log.flush();
            });
          }
          return done;
        },
      },
    });
    log.write("first line");
    await log.flush();
    await later;
    assert.match(text, /first line\n.*late line\n$/s, `depth ${depth}: ${JSON.stringify(text)}`);
  }
});

Deno.test("MainLog writes client text with line breaks and other controls escaped (\\n, \\r, \\t, \\xHH), one line per write", async () => {
  const out = new GatedOutput();
  out.open();
  const log = new MainLog({ format: "exim", output: out });
  log.write("plain line");
  log.write(
    "set_id=alice\n2026-12-07 00:00:00 1xaaaa-000000000000-0000 <= forged@x.test\r\tH=(a\x1b[2J\x00b)",
  );
  await log.flush();
  const lines = out.text.trimEnd().split("\n");
  assert.equal(lines.length, 2, out.text);
  assert.match(lines[0], / plain line$/);
  assert.match(
    lines[1],
    / set_id=alice\\n2026-12-07 00:00:00 1xaaaa-000000000000-0000 <= forged@x\.test\\r\\tH=\(a\\x1b\[2J\\x00b\)$/,
  );
  assert.equal(printable("nothing to do: ü"), "nothing to do: ü");
  // C1 controls too: U+009B is CSI in one character (the octets C2 9B from a client), U+0085 is NEL.
  assert.equal(
    printable('unknown command "\u009b2J\u0085x\u0080\u009f\u00a0"'),
    'unknown command "\\x9b2J\\x85x\\x80\\x9f\u00a0"',
  );
  // JSON lines escape controls by JSON's own rules.
  const json = new GatedOutput();
  json.open();
  const jlog = new MainLog({ format: "json", output: json });
  jlog.write("a\nb");
  await jlog.flush();
  assert.equal(JSON.parse(json.text).msg, "a\nb");
});
