/**
 * PRDR with a real client: Exim 4.96 (unpacked by .ci/exim-unpack.sh) delivers a locally submitted message
 * to Ferry with `hosts_try_prdr = *`; its main log says what it understood of Ferry's per-recipient and
 * final replies. Needs root (Exim's spool belongs to the Debian-exim user).
 */

import assert from "node:assert/strict";
import type { FerryConfig } from "../../mod.ts";
import type { PolicyMiddleware } from "../../src/policy/context.ts";
import { ensureExim, eximConfig } from "../helpers/exim.ts";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";

const refuseTrap: PolicyMiddleware<"prdr"> = async function refuse_trap(c, next) {
  if (c.recipient.local === "trap") c.reject("No thanks", 550, "5.7.1");
  await next();
};

/** Submits one message to Exim (`exim -odi`: delivered before exim exits) routed to Ferry; returns Exim's main log. */
async function viaExim(f: TestFerry, rcpts: string[]): Promise<string> {
  const exim = await ensureExim();
  const dir = await eximConfig(
    exim,
    "",
    [
      "begin routers",
      "to_ferry:",
      "  driver = manualroute",
      "  domains = example.test",
      "  route_list = * 127.0.0.1",
      "  transport = ferry_smtp",
      "  self = send",
      "begin transports",
      "ferry_smtp:",
      "  driver = smtp",
      `  port = ${f.port}`,
      "  hosts_try_prdr = *",
      "  allow_localhost",
    ].join("\n"),
  );
  try {
    const child = new Deno.Command(exim, {
      args: ["-C", `${dir}/exim.conf`, "-odi", "-f", "sender@client.test", ...rcpts],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode("Subject: prdr via exim\n\nhello\n"));
    await w.close();
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return await Deno.readTextFile(`${dir}/log/mainlog`);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function withPrdrFerry(
  policy: FerryConfig["policy"],
  fn: (f: TestFerry) => Promise<void>,
): Promise<void> {
  const f = await startTestFerry({
    prdr: { enable: true },
    relay: { domains: ["example.test"], clients: [] },
    policy,
  });
  try {
    await fn(f);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("Exim as PRDR client: the prdr stage refuses one recipient before the data stage runs, Exim delivers the other", async () => {
  const order: string[] = [];
  await withPrdrFerry({
    mail: [async (c, next) => {
      order.push(`mail prdr=${c.prdr}`);
      await next();
    }],
    prdr: [async function note(c, next) {
      order.push(`prdr ${c.recipient.address}`);
      await next();
    }, refuseTrap],
    data: [async (c, next) => {
      order.push(
        `data ${c.recipients.map((r) => r.address)} refused=${c.refused.map((r) => r.recipient.address)}`,
      );
      await next();
    }],
  }, async (f) => {
    const log = await viaExim(f, ["ok@example.test", "trap@example.test"]);
    assert.match(log, /=> ok@example\.test R=to_ferry T=ferry_smtp H=127\.0\.0\.1 \[127\.0\.0\.1\] PRDR /);
    assert.match(log, /\*\* trap@example\.test .*550 5\.7\.1 <trap@example\.test> No thanks/);
    assert.deepEqual(order, [
      "mail prdr=true",
      "prdr ok@example.test",
      "prdr trap@example.test",
      "data ok@example.test refused=trap@example.test",
    ]);
    const stored = await f.spool.list();
    assert.equal(stored.length, 1);
    assert.deepEqual(stored[0].envelope.recipients.map((r) => r.address), ["ok@example.test"]);
  });
});

Deno.test("Exim as PRDR client: a data-stage refusal after the per-recipient replies fails every recipient at Exim", async () => {
  await withPrdrFerry({
    prdr: [refuseTrap],
    data: [(c) => c.reject("Content refused", 550, "5.7.0")],
  }, async (f) => {
    const log = await viaExim(f, ["ok@example.test", "trap@example.test"]);
    assert.match(log, /\*\* ok@example\.test .*550 5\.7\.0 Content refused/);
    // The final reply decides for every recipient, whatever its PRDR reply was.
    assert.match(log, /\*\* trap@example\.test .*550 5\.7\.0 Content refused/);
    assert.doesNotMatch(log, /=> ok@example\.test/);
    assert.equal(await f.spool.count(), 0);
  });
});
