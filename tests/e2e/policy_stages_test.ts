/** Policy middleware at every stage over the wire: reject, defer and drop, and what the client sees. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";
import type { BaseContext } from "../../src/policy/context.ts";

type StageName = "connect" | "helo" | "mail" | "rcpt" | "data";
type Verdict = "reject" | "defer" | "drop";

const STEPS: StageName[] = ["connect", "helo", "mail", "rcpt", "data"];

/** Runs a session until `stage` has been answered; returns that reply. */
async function runUntil(c: RawClient, stage: StageName): Promise<{ code: number; text: string } | null> {
  const banner = await c.reply();
  if (stage === "connect") return banner;
  assert.equal(banner?.code, 220);
  const ehlo = await c.cmd("EHLO policy.test");
  if (stage === "helo") return ehlo;
  const mail = await c.cmd("MAIL FROM:<s@sender.test>");
  if (stage === "mail") return mail;
  const rcpt = await c.cmd("RCPT TO:<r@example.test>");
  if (stage === "rcpt") return rcpt;
  assert.equal((await c.cmd("DATA"))?.code, 354);
  return await c.cmd("Subject: policy\r\n\r\nbody\r\n.");
}

function verdictStep(verdict: Verdict) {
  return async function stage_verdict(c: BaseContext, next: () => Promise<void>) {
    if (verdict === "reject") c.reject("No mail from you");
    if (verdict === "defer") c.defer("Come back later");
    if (verdict === "drop") c.drop("Go away");
    await next();
  };
}

const EXPECT: Record<Verdict, { code: number; enhanced: string; text: string }> = {
  reject: { code: 550, enhanced: "5.7.1", text: "No mail from you" },
  defer: { code: 451, enhanced: "4.7.1", text: "Come back later" },
  drop: { code: 421, enhanced: "4.7.0", text: "Go away" },
};

for (const stage of STEPS) {
  for (const verdict of ["reject", "defer", "drop"] as Verdict[]) {
    Deno.test(`policy.${stage}: c.${verdict}() answers ${EXPECT[verdict].code} and nothing is spooled`, async () => {
      await withFerry({ policy: { [stage]: [verdictStep(verdict)] } }, async (f) => {
        const c = await RawClient.connect(f.port);
        try {
          const r = await runUntil(c, stage);
          const want = EXPECT[verdict];
          // At connect a temporary refusal is a 421 (RFC 5321 3.8): the session cannot go on; a permanent one is
          // 554, the only other code RFC 5321 4.3.2 allows instead of the greeting.
          const code = stage === "connect" && verdict === "defer"
            ? 421
            : stage === "connect" && verdict === "reject"
            ? 554
            : want.code;
          assert.equal(r?.code, code, `${r?.code} ${r?.text}`);
          assert.equal(r?.text, `${want.enhanced} ${want.text}`);
          if (verdict === "drop" || stage === "connect") {
            assert.ok(await c.closed(), "connection should be closed");
          } else {
            assert.equal((await c.cmd("NOOP"))?.code, 250, "session should go on");
          }
          assert.equal(await f.spool.count(), 0);
          // The 'rejected' log line gives the code the client was sent.
          assert.ok(f.memlog.has(`: ${code} ${want.enhanced} ${want.text}`), "a 'rejected' log line");
        } finally {
          c.close();
        }
      });
    });
  }
}

Deno.test("policy.helo: after a refused EHLO the client must greet again before MAIL", async () => {
  const noBadHelo = async function no_bad_helo(c: BaseContext, next: () => Promise<void>) {
    if (c.helo === "bad.test") c.reject("Bad HELO");
    await next();
  };
  await withFerry({ policy: { helo: [noBadHelo] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO bad.test"))?.code, 550);
      assert.equal((await c.cmd("MAIL FROM:<s@sender.test>"))?.code, 503);
      assert.equal((await c.cmd("EHLO good.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<s@sender.test>"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("policy chains run in order and the first verdict wins; later steps do not run", async () => {
  const ran: string[] = [];
  const first = async function first(_c: BaseContext, next: () => Promise<void>) {
    ran.push("first");
    await next();
    ran.push("first-after");
  };
  const second = function second(c: BaseContext) {
    ran.push("second");
    c.reject("Second says no", 554, "5.7.1");
  };
  const third = async function third(_c: BaseContext, next: () => Promise<void>) {
    ran.push("third");
    await next();
  };
  await withFerry({ policy: { mail: [first, second, third] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      const r = await runUntil(c, "mail");
      assert.equal(r?.code, 554);
      assert.deepEqual(ran, ["first", "second"]);
    } finally {
      c.close();
    }
  });
});

Deno.test("policy.rcpt sees each recipient and the ones accepted so far; relay control runs first", async () => {
  const seen: string[] = [];
  const record = async function record(
    c: BaseContext & { recipient: { address: string }; recipients: readonly { address: string }[] },
    next: () => Promise<void>,
  ) {
    seen.push(`${c.recipient.address}|${c.recipients.map((r) => r.address).join(",")}`);
    if (c.recipient.address.startsWith("no@")) c.reject("Unknown user", 550, "5.1.1");
    await next();
  };
  await withFerry({ policy: { rcpt: [record] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO policy.test");
      await c.cmd("MAIL FROM:<s@sender.test>");
      assert.equal((await c.cmd("RCPT TO:<a@example.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<x@elsewhere.test>"))?.code, 550);
      const unknown = await c.cmd("RCPT TO:<no@example.test>");
      assert.equal(unknown?.text, "5.1.1 Unknown user");
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      // The foreign recipient never reached the configured chain.
      assert.deepEqual(seen, [
        "a@example.test|",
        "no@example.test|a@example.test",
        "b@example.test|a@example.test",
      ]);
    } finally {
      c.close();
    }
  });
});
