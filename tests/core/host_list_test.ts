import assert from "node:assert/strict";
import { HostList, HostListError, normalizeName, parseHostListItem } from "../../src/core/host_list.ts";

Deno.test('HostList "*" matches any address and any name, and nothing is matched by an empty list', () => {
  const any = new HostList("*");
  assert.equal(any.matchSync({ ip: "203.0.113.5" }), true);
  assert.equal(any.matchSync({ name: "whatever.example" }), true);
  assert.equal(any.matchSync({}), true);
  const none = new HostList([]);
  assert.equal(none.empty, true);
  assert.equal(none.matchSync({ ip: "127.0.0.1", name: "localhost" }), false);
  assert.equal(new HostList("").empty, true);
});

Deno.test("HostList matches CIDRs and addresses, including IPv4-mapped IPv6 clients", () => {
  const list = new HostList(["127.0.0.0/8", "::1", "2001:db8::/32", "192.0.2.7"]);
  assert.equal(list.matchSync({ ip: "127.1.2.3" }), true);
  assert.equal(list.matchSync({ ip: "::ffff:127.0.0.1" }), true);
  assert.equal(list.matchSync({ ip: "::1" }), true);
  assert.equal(list.matchSync({ ip: "2001:db8:1::5" }), true);
  assert.equal(list.matchSync({ ip: "192.0.2.7" }), true);
  assert.equal(list.matchSync({ ip: "192.0.2.8" }), false);
  assert.equal(list.matchSync({ ip: "::2" }), false);
  // An address item never matches a name subject.
  assert.equal(list.matchSync({ name: "127.0.0.1" }), false);
});

Deno.test("HostList matches names case-insensitively, ignoring one trailing dot", () => {
  const list = new HostList("Example.TEST mx.other.test.");
  assert.equal(list.matchSync({ name: "example.test" }), true);
  assert.equal(list.matchSync({ name: "EXAMPLE.test." }), true);
  assert.equal(list.matchSync({ name: "mx.other.test" }), true);
  assert.equal(list.matchSync({ name: "sub.example.test" }), false);
  assert.equal(list.matchSync({ name: "example.testx" }), false);
  assert.equal(list.matchSync({ ip: "127.0.0.1" }), false);
});

Deno.test('HostList "*.suffix" matches strict subdomains only', () => {
  const list = new HostList(["*.example.test"]);
  assert.equal(list.matchSync({ name: "a.example.test" }), true);
  assert.equal(list.matchSync({ name: "A.B.Example.Test." }), true);
  assert.equal(list.matchSync({ name: "example.test" }), false);
  assert.equal(list.matchSync({ name: "badexample.test" }), false);
  assert.equal(list.matchSync({ name: "example.test.evil" }), false);
});

Deno.test("HostList negation: the first matching item decides, in order", () => {
  const list = new HostList("!10.0.0.1, 10.0.0.0/8, !*.bad.test, *.test");
  assert.equal(list.matchSync({ ip: "10.0.0.1" }), false);
  assert.equal(list.matchSync({ ip: "10.0.0.2" }), true);
  assert.equal(list.matchSync({ name: "x.bad.test" }), false);
  assert.equal(list.matchSync({ name: "x.good.test" }), true);
  assert.equal(list.matchSync({ ip: "11.0.0.1" }), false);
  // Same items, other order: the positive item now wins.
  const flipped = new HostList(["10.0.0.0/8", "!10.0.0.1"]);
  assert.equal(flipped.matchSync({ ip: "10.0.0.1" }), true);
  // "!x" then "*": everything except x.
  const allBut = new HostList(["! blocked.test", "*"]);
  assert.equal(allBut.matchSync({ name: "blocked.test" }), false);
  assert.equal(allBut.matchSync({ name: "other.test" }), true);
  // A lone negation matches nothing (no item says yes).
  assert.equal(new HostList("!blocked.test").matchSync({ name: "other.test" }), false);
  assert.equal(new HostList("!*").matchSync({ name: "x" }), false);
});

Deno.test("HostList subject with both ip and name can match by either", () => {
  const list = new HostList(["mail.example.test", "192.0.2.0/24"]);
  assert.equal(list.matchSync({ ip: "198.51.100.1", name: "mail.example.test" }), true);
  assert.equal(list.matchSync({ ip: "192.0.2.9", name: "other.test" }), true);
  assert.equal(list.matchSync({ ip: "198.51.100.1", name: "other.test" }), false);
});

Deno.test("HostList function form is awaited and refused by matchSync()", async () => {
  const seen: unknown[] = [];
  const list = new HostList(async (s) => {
    seen.push(s);
    await Promise.resolve();
    return s.ip === "192.0.2.1";
  });
  assert.equal(list.empty, false);
  assert.equal(await list.match({ ip: "192.0.2.1" }), true);
  assert.equal(await list.match({ ip: "192.0.2.2" }), false);
  assert.deepEqual(seen, [{ ip: "192.0.2.1" }, { ip: "192.0.2.2" }]);
  assert.throws(() => list.matchSync({ ip: "192.0.2.1" }), TypeError);
  // A truthy non-boolean counts as a match.
  const loose = new HostList((() => 1) as unknown as () => boolean);
  assert.equal(await loose.match({}), true);
  assert.deepEqual(HostList.problems(() => false), []);
});

Deno.test("HostList match() on a fixed list gives the same answer as matchSync()", async () => {
  const list = new HostList("!192.0.2.1 192.0.2.0/24");
  assert.equal(await list.match({ ip: "192.0.2.1" }), false);
  assert.equal(await list.match({ ip: "192.0.2.2" }), true);
});

Deno.test("HostList refuses items it cannot understand, naming them", () => {
  for (
    const [item, re] of [
      ["10.0.0.0/33", /invalid address or network "10.0.0.0\/33"/],
      ["300.1.1.1", /invalid address or network/],
      ["1.2.3", /invalid address or network/],
      ["fe80::1%eth0", /invalid address or network/],
      ["*.", /invalid domain suffix/],
      ["*.a..b", /invalid domain suffix/],
      ["!", /empty host list item/],
      ["bad name", /invalid host name/],
      ["user@example.test", /invalid host name/],
      ["*example.test", /invalid host name/],
      ["exa$mple.test", /invalid host name/],
      ["a..b.test", /invalid host name/],
    ] as const
  ) {
    const problem = parseHostListItem(item);
    assert.equal(typeof problem, "string", item);
    assert.match(problem as string, re, item);
    assert.throws(() => new HostList([item]), TypeError, item);
  }
  assert.deepEqual(HostList.problems("ok.test, 10.0.0.0/99, *.fine.test, 1.2.3.4.5"), [
    'invalid address or network "10.0.0.0/99"',
    'invalid address or network "1.2.3.4.5"',
  ]);
});

Deno.test("HostList accepts internationalised names and matches them exactly", () => {
  const list = new HostList(["bücher.example", "*.пример.test"]);
  assert.equal(list.matchSync({ name: "BÜCHER.example" }), true);
  assert.equal(list.matchSync({ name: "mx.пример.test" }), true);
});

Deno.test("normalizeName() lowercases and strips one trailing dot", () => {
  assert.equal(normalizeName("Mail.Example.TEST."), "mail.example.test");
  assert.equal(normalizeName("a.b"), "a.b");
  assert.equal(normalizeName(""), "");
});

Deno.test("a hung function host list fails with HostListError naming the list within its deadline, and its signal fires", async () => {
  let seen: AbortSignal | undefined;
  const list = new HostList((_subject, { signal }) => {
    seen = signal;
    return new Promise<boolean>(() => {});
  }, { name: "relay.clients", timeoutMs: 50 });
  const t0 = Date.now();
  await assert.rejects(list.match({ ip: "192.0.2.1" }), (err: unknown) => {
    assert.ok(err instanceof HostListError);
    assert.equal(err.list, "relay.clients");
    assert.equal(err.timedOut, true);
    assert.match(err.message, /^relay\.clients: host list function did not answer within 50 ms$/);
    return true;
  });
  assert.ok(Date.now() - t0 < 2000, "gave up at the deadline");
  assert.equal(seen?.aborted, true, "the function's signal was aborted");
});

Deno.test("a function host list that throws is a HostListError, not a miss; the caller's signal aborts it", async () => {
  const failing = new HostList(() => {
    throw new Error("redis down");
  }, { name: "proxyRequiredHosts" });
  await assert.rejects(
    failing.match({ ip: "192.0.2.1" }),
    /proxyRequiredHosts: host list function failed: redis down/,
  );
  const caller = new AbortController();
  const hung = new HostList(
    (_s, { signal }) =>
      new Promise<boolean>((_, reject) =>
        signal.addEventListener("abort", () => reject(new Error("aborted")))
      ),
    { name: "x" },
  );
  const p = hung.match({ ip: "192.0.2.1" }, { signal: caller.signal });
  caller.abort();
  await assert.rejects(p, (err: unknown) => err instanceof HostListError && err.timedOut);
  // A function list that answers passes its answer through, with the subject.
  const fn = new HostList(({ ip }) => Promise.resolve(ip === "192.0.2.9"), { timeoutMs: 1000 });
  assert.equal(await fn.match({ ip: "192.0.2.9" }), true);
  assert.equal(await fn.match({ ip: "192.0.2.8" }), false);
});
