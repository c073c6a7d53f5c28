import assert from "node:assert/strict";
import {
  fromBase62,
  MESSAGE_ID_PATTERN,
  MessageIdGenerator,
  newMessageId,
  parseMessageId,
  toBase62,
} from "../../src/spool/message_id.ts";

Deno.test("newMessageId() has the Exim 4.97 form with this process's instance number and the current time", () => {
  const before = Math.floor(Date.now() / 1000);
  const id = newMessageId();
  const after = Math.floor(Date.now() / 1000);
  assert.match(id, /^[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}$/);
  assert.equal(id.length, 23);
  const parts = parseMessageId(id)!;
  assert.ok(Number.isSafeInteger(parts.instance) && parts.instance >= 0);
  assert.equal(parseMessageId(newMessageId())!.instance, parts.instance, "one instance number a process");
  assert.ok(parts.seconds >= before && parts.seconds <= after + 1, `seconds ${parts.seconds}`);
  assert.ok(parts.slot < 1_000_000);
});

Deno.test("newMessageId() gives 100,000 distinct ids in strictly increasing order", () => {
  const ids: string[] = [];
  for (let i = 0; i < 100_000; i++) ids.push(newMessageId());
  assert.equal(new Set(ids).size, ids.length);
  for (let i = 1; i < ids.length; i++) {
    if (!(ids[i - 1] < ids[i])) assert.fail(`id ${i} "${ids[i]}" does not sort after "${ids[i - 1]}"`);
  }
});

Deno.test("MessageIdGenerator never repeats when the clock stands still or steps back", () => {
  let now = 1_700_000_000_000_000;
  const gen = new MessageIdGenerator({ nowMicros: () => now, instance: 4242 });
  const ids = new Set<string>();
  let last = "";
  const take = () => {
    const id = gen.next();
    assert.ok(!ids.has(id), `repeated "${id}"`);
    assert.ok(id > last, `"${id}" not after "${last}"`);
    ids.add(id);
    last = id;
  };
  for (let i = 0; i < 1000; i++) take(); // frozen clock
  now -= 10_000_000; // NTP steps back ten seconds
  for (let i = 0; i < 1000; i++) {
    take();
    now += 7;
  }
  now += 60_000_000; // and forward again
  take();
  assert.equal(parseMessageId(last)!.seconds, Math.floor(now / 1_000_000));
});

Deno.test("MessageIdGenerator rolls the sub-second slot over into the next second", () => {
  const gen = new MessageIdGenerator({ nowMicros: () => 5_999_999, instance: 1 });
  assert.deepEqual(parseMessageId(gen.next()), { seconds: 5, instance: 1, slot: 999_999 });
  assert.deepEqual(parseMessageId(gen.next()), { seconds: 6, instance: 1, slot: 0 });
});

Deno.test("ids of different generators at the same instant differ by their instance number", () => {
  const a = new MessageIdGenerator({ nowMicros: () => 1_000_000, instance: 100 }).next();
  const b = new MessageIdGenerator({ nowMicros: () => 1_000_000, instance: 2 ** 53 - 1 }).next();
  assert.notEqual(a, b);
  assert.equal(a.slice(0, 6), b.slice(0, 6));
  assert.equal(a.slice(-4), b.slice(-4));
});

Deno.test("two processes generating ids at once never collide", async () => {
  const code = "import { newMessageId } from " +
    JSON.stringify(new URL("../../src/spool/message_id.ts", import.meta.url).href) +
    "; const out = []; for (let i = 0; i < 20000; i++) out.push(newMessageId()); console.log(out.join('\\n'));";
  const run = () =>
    new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped", stderr: "inherit" }).output();
  const [a, b] = await Promise.all([run(), run()]);
  assert.ok(a.success && b.success);
  const idsA = new TextDecoder().decode(a.stdout).trim().split("\n");
  const idsB = new TextDecoder().decode(b.stdout).trim().split("\n");
  assert.equal(idsA.length, 20000);
  const all = new Set([...idsA, ...idsB]);
  assert.equal(all.size, 40000);
});

Deno.test("generators of two processes with the same pid and the same clock reading make different ids", () => {
  // Two containers each running Ferry as PID 1, or a restart after the clock stepped back: nothing but the
  // generator itself tells the two apart.
  const a = new MessageIdGenerator({ nowMicros: () => 1_700_000_000_000_000 });
  const b = new MessageIdGenerator({ nowMicros: () => 1_700_000_000_000_000 });
  const idsA = Array.from({ length: 1000 }, () => a.next());
  const idsB = new Set(Array.from({ length: 1000 }, () => b.next()));
  assert.ok(idsA.every((id) => !idsB.has(id)), "an id was made twice");
});

Deno.test("a process that is PID 1 in a new PID namespace, started twice on the same clock reading, never repeats an id", async () => {
  // Each run is PID 1 (unshare --pid); both read the same frozen time, as a restart does after the clock
  // stepped back to where the previous run was.
  const code = "import { MessageIdGenerator, newMessageId } from " +
    JSON.stringify(new URL("../../src/spool/message_id.ts", import.meta.url).href) +
    "; const gen = new MessageIdGenerator({ nowMicros: () => 1_700_000_000_123_456 });" +
    " const out = [String(Deno.pid), newMessageId()]; for (let i = 0; i < 5000; i++) out.push(gen.next());" +
    " console.log(out.join('\\n'));";
  const run = async () => {
    const out = await new Deno.Command("unshare", {
      args: ["--user", "--map-root-user", "--pid", "--fork", Deno.execPath(), "eval", code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout).trim().split("\n");
  };
  const [pidA, ...idsA] = await run();
  const [pidB, ...idsB] = await run();
  assert.equal(pidA, "1");
  assert.equal(pidB, "1");
  assert.equal(idsA.length, 5001);
  assert.equal(new Set([...idsA, ...idsB]).size, 10002);
});

Deno.test("toBase62() and fromBase62() round-trip and reject what does not fit", () => {
  assert.equal(toBase62(0, 4), "0000");
  assert.equal(toBase62(61, 1), "z");
  assert.equal(toBase62(62, 2), "10");
  assert.equal(fromBase62(toBase62(123_456_789, 6)), 123_456_789);
  assert.throws(() => toBase62(-1, 4), RangeError);
  assert.throws(() => toBase62(1.5, 4), RangeError);
  assert.throws(() => toBase62(62 ** 4, 4), RangeError);
  assert.throws(() => fromBase62("ab-c"), RangeError);
});

Deno.test("parseMessageId() refuses anything that is not a plain message id", () => {
  for (
    const bad of [
      "",
      "../../etc/passwd",
      "1xUyAZ-000000002FP-3TV",
      "1xUyAZ-000000002FP-3TVm\n",
      "1xUyAZ/000000002FP/3TVm",
    ]
  ) {
    assert.equal(parseMessageId(bad), undefined, bad);
    assert.ok(!MESSAGE_ID_PATTERN.test(bad));
  }
});
