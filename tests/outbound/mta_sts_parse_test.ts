import assert from "node:assert/strict";
import { mxMatches, parseStsPolicy, StsCache, stsRecordId } from "../../src/outbound/security/mta_sts.ts";

Deno.test("parseStsPolicy() reads version, mode, every mx and max_age; refuses what RFC 8461 §3.2 forbids", () => {
  const p = parseStsPolicy(
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.net\r\nmx: *.example.org\r\nmax_age: 604800\r\n",
  );
  assert.deepEqual(p, { mode: "enforce", mx: ["mx1.example.net", "*.example.org"], maxAge: 604800 });
  assert.throws(() => parseStsPolicy("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1"), /STSv1/);
  assert.throws(() => parseStsPolicy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1"), /mode/);
  assert.throws(() => parseStsPolicy("version: STSv1\nmode: enforce\nmax_age: 1"), /no mx/);
  assert.throws(() => parseStsPolicy("version: STSv1\nmode: enforce\nmx: a\nmax_age: -5"), /max_age/);
  assert.equal(parseStsPolicy("version: STSv1\nmode: none\nmax_age: 9999999999").maxAge, 31_557_600);
});

Deno.test("mxMatches(): a wildcard covers exactly one left-most label", () => {
  assert.equal(mxMatches("*.example.net", "mx1.example.net"), true);
  assert.equal(mxMatches("*.example.net", "a.b.example.net"), false);
  assert.equal(mxMatches("*.example.net", "example.net"), false);
  assert.equal(mxMatches("mx.example.net", "MX.example.net."), true);
});

Deno.test("stsRecordId(): exactly one v=STSv1 record with a valid id", () => {
  assert.equal(stsRecordId(["v=STSv1; id=20160831085700Z;"]), "20160831085700Z");
  assert.equal(stsRecordId(["v=spf1 -all", "v=STSv1; id=abc"]), "abc");
  assert.equal(stsRecordId(["v=STSv1; id=a", "v=STSv1; id=b"]), undefined);
  assert.equal(stsRecordId(["v=STSv1; id=not-alnum"]), undefined);
  assert.equal(stsRecordId([]), undefined);
});

Deno.test("StsCache persists atomically and forgets a policy after max_age", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/c.json`;
    const c = new StsCache(file);
    await c.set("a.test", {
      id: "1",
      policy: { mode: "enforce", mx: ["mx.a.test"], maxAge: 60 },
      fetchedAt: 1000,
    });
    const again = new StsCache(file);
    assert.equal(again.get("a.test", 2000)?.id, "1");
    assert.equal(again.get("a.test", 1000 + 61_000), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
