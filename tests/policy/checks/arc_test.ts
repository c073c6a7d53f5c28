/**
 * ARC against dkimpy both ways: a chain dkimpy sealed verifies in Ferry (arc=pass in Authentication-Results),
 * Ferry extends it at delivery with a set dkimpy verifies (cv=pass, two instances), seals an unsealed message
 * as i=1, refuses to extend a chain that failed, and a body changed after Ferry's seal fails in dkimpy.
 */

import assert from "node:assert/strict";
import { startDownstream, startFerryIn, submit, waitFor } from "../../helpers/downstream.ts";
import { MemoryResolver } from "../../../src/dns/memory_resolver.ts";
import { dkim } from "../../../src/policy/checks/dkim.ts";
import { arc } from "../../../src/policy/checks/arc.ts";
import { dkimpyArcSign, dkimpyArcVerify, keyName, makeKey } from "./_dkim.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const origin = makeKey("origin.test", "arc1", "rsa-sha256");
const ours = makeKey("ferry.test", "seal1", "rsa-sha256");

const BODY =
  "From: alice@origin.test\r\nTo: list@dest.test\r\nSubject: arc\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n" +
  "Message-ID: <arc1@origin.test>\r\n\r\nForwarded through a list\r\n";

Deno.test("ARC: dkimpy's chain passes in Ferry, Ferry's seal passes in dkimpy; cv=fail is never extended", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-arc-" });
  await Deno.writeTextFile(`${dir}/seal.pem`, ours.pem);
  const resolver = new MemoryResolver();
  resolver.set(keyName(origin), "TXT", [origin.record]);
  const ds = startDownstream();
  const f = await startFerryIn({
    checks: [dkim(), arc()],
    routes: [{ name: "out", domains: "*", hosts: ["127.0.0.1"], port: ds.port }],
    arc: { seal: { domain: "ferry.test", selector: "seal1", keyFile: `${dir}/seal.pem` }, routes: ["out"] },
  }, { resolver });
  try {
    const withAr = enc.encode(
      "Authentication-Results: origin.test; spf=pass smtp.mailfrom=origin.test\r\n" + BODY,
    );
    const sealed = await dkimpyArcSign(withAr, origin, "origin.test");
    assert.equal((await dkimpyArcVerify(sealed, [origin])).cv, "pass");
    const tampered = enc.encode(dec.decode(sealed).replace("through a list", "through a forger"));

    const id1 = await submit(f.port, ["a@dest.test"], {
      from: "alice@origin.test",
      body: dec.decode(sealed),
    });
    const id2 = await submit(f.port, ["b@dest.test"], { from: "alice@origin.test", body: BODY });
    const id3 = await submit(f.port, ["c@dest.test"], {
      from: "alice@origin.test",
      body: dec.decode(tampered),
    });
    await waitFor(() => ds.messages.length === 3, 8000, "three deliveries");
    const by = (rcpt: string) => enc.encode(ds.messages.find((m) => m.rcpts[0] === rcpt)!.data);

    // 1. An intact chain: arc=pass at reception, extended by Ferry to i=2, dkimpy agrees.
    assert.ok(f.memlog.lines.some((l) => l.text.includes("data: ARC pass i=1")));
    const out1 = by("a@dest.test");
    const text1 = dec.decode(out1);
    assert.match(text1, /^ARC-Seal: i=2; a=rsa-sha256; .*cv=pass/m);
    assert.match(text1, /ARC-Authentication-Results: i=2; ferry\.test;[^]*arc=pass \(i=1\)/);
    assert.match(
      text1,
      /Authentication-Results: ferry\.test;[^]*arc=pass \(i=1\) smtp\.remote-ip=127\.0\.0\.1/,
    );
    const v1 = await dkimpyArcVerify(out1, [origin, ours]);
    assert.deepEqual([v1.cv, v1.instances], ["pass", 2], v1.comment);

    // 2. No chain: Ferry seals as i=1 with cv=none, and dkimpy verifies it.
    const out2 = by("b@dest.test");
    assert.match(dec.decode(out2), /^ARC-Seal: i=1; a=rsa-sha256; .*cv=none/m);
    const v2 = await dkimpyArcVerify(out2, [ours]);
    assert.deepEqual([v2.cv, v2.instances], ["pass", 1], v2.comment);
    const changed = enc.encode(dec.decode(out2).replace("through a list", "through a forger"));
    assert.equal((await dkimpyArcVerify(changed, [ours])).cv, "fail");

    // 3. A broken chain: arc=fail at reception and no new set.
    const out3 = dec.decode(by("c@dest.test"));
    assert.match(out3, /Authentication-Results: ferry\.test;[^]*arc=fail/);
    assert.doesNotMatch(out3, /ARC-Seal: i=2/);
    assert.ok(f.memlog.has("ARC: not sealed: the chain failed verification (cv=fail is never extended)"));
    assert.equal((await dkimpyArcVerify(enc.encode(out3), [origin, ours])).cv, "fail");
    assert.ok(id1 && id2 && id3);
  } finally {
    await f.dispose();
    await ds.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
