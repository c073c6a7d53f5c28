import assert from "node:assert/strict";
import { SmtpError } from "../../src/core/reply.ts";
import type { HostListSpec } from "../../src/core/host_list.ts";
import { parsePathArg } from "../../src/smtp/command.ts";
import { type PolicyRecipient, type RcptContext, verdicts } from "../../src/policy/context.ts";
import { relayControl } from "../../src/policy/relay_control.ts";
import { runStage } from "../../src/policy/run_stage.ts";
import { Variables } from "../../src/policy/variables.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";

/** Builds the rcpt context the inbound side would build from a raw `RCPT` argument. */
function rcptContext(clientIp: string, rcptArg: string, logs: string[]): RcptContext {
  const path = parsePathArg(rcptArg, "RCPT", true);
  const recipient: PolicyRecipient = {
    address: path.address,
    local: path.mailbox?.local ?? path.address,
    domain: path.mailbox?.domain ?? "",
  };
  return {
    stage: "rcpt",
    client: { ip: clientIp, port: 40000 },
    proxyFailed: false,
    server: { ip: "127.0.0.1", port: 25 },
    ...new Variables().access("message"),
    resolver: new MemoryResolver(),
    authservId: "ferry.test",
    signal: new AbortController().signal,
    log: (text) => logs.push(text),
    ...verdicts(),
    sender: "sender@elsewhere.test",
    smtputf8: false,
    prdr: false,
    recipient,
    recipients: [],
  };
}

interface Outcome {
  accepted: boolean;
  error?: SmtpError;
  logs: string[];
}

/** Runs relay control then a final step that marks acceptance, as the rcpt chain does. */
async function relay(
  clientIp: string,
  rcptArg: string,
  opts: { domains: HostListSpec; clients: HostListSpec } = {
    domains: ["example.test"],
    clients: ["127.0.0.0/8", "::1"],
  },
): Promise<Outcome> {
  const logs: string[] = [];
  let accepted = false;
  try {
    await runStage("rcpt", [relayControl(opts)], rcptContext(clientIp, rcptArg, logs), {
      timeoutMs: 1000,
      log: (t) => logs.push(t),
      final: () => {
        accepted = true;
        return Promise.resolve();
      },
    });
    return { accepted, logs };
  } catch (err) {
    assert.ok(err instanceof SmtpError, `unexpected ${err}`);
    return { accepted, error: err, logs };
  }
}

const UNTRUSTED = "203.0.113.50";

const OPEN_RELAY_FORMS = [
  "TO:<user%evil.test@example.test>",
  "TO:<evil.test!user@example.test>",
  'TO:<"user@evil.test"@example.test>',
  'TO:<"user%evil.test"@example.test>',
  "TO:<@example.test:user@evil.test>",
  "TO:<@example.test,@example.test:user@evil.test>",
  "TO:<user@[192.0.2.1]>",
  "TO:<user@[IPv6:2001:db8::1]>",
  "TO:<user@evil.test.>",
  "TO:<User@EVIL.test>",
  "TO:<user@example.test.evil.test>",
  "TO:<user@sub.example.test>",
  "TO:<postmaster@evil.test>",
];

for (const form of OPEN_RELAY_FORMS) {
  Deno.test(`relayControl() refuses ${form.slice(3)} from an untrusted client (550 5.7.1)`, async () => {
    const r = await relay(UNTRUSTED, form);
    assert.equal(r.accepted, false);
    assert.equal(r.error?.code, 550);
    assert.equal(r.error?.enhanced, "5.7.1");
    assert.ok(r.logs.some((l) => l.includes("relay not permitted")), JSON.stringify(r.logs));
  });
}

for (
  const form of ["TO:<user@example.test>", "TO:<USER@Example.Test.>", "TO:<postmaster>", "TO:<PostMaster>"]
) {
  Deno.test(`relayControl() accepts ${form.slice(3)} from an untrusted client`, async () => {
    const r = await relay(UNTRUSTED, form);
    assert.equal(r.error, undefined);
    assert.equal(r.accepted, true);
  });
}

Deno.test("relayControl() lets a client in relay.clients relay anywhere", async () => {
  for (const ip of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"]) {
    for (const form of ["TO:<user@evil.test>", "TO:<user%evil.test@example.test>", "TO:<user@[192.0.2.1]>"]) {
      const r = await relay(ip, form);
      assert.equal(r.accepted, true, `${ip} ${form}`);
    }
  }
  const r = await relay("128.0.0.1", "TO:<user@evil.test>");
  assert.equal(r.error?.code, 550);
});

Deno.test("relayControl() denies by default with empty lists", async () => {
  const none = { domains: [], clients: [] };
  assert.equal((await relay("127.0.0.1", "TO:<user@example.test>", none)).error?.code, 550);
  // postmaster without a domain is always ours (RFC 5321 4.5.1).
  assert.equal((await relay("127.0.0.1", "TO:<postmaster>", none)).accepted, true);
});

Deno.test("relayControl() honours suffix and negated domain items and function lists", async () => {
  const opts = { domains: ["!private.example.test", "*.example.test"], clients: () => false };
  assert.equal((await relay(UNTRUSTED, "TO:<a@mx.example.test>", opts)).accepted, true);
  assert.equal((await relay(UNTRUSTED, "TO:<a@private.example.test>", opts)).error?.code, 550);
  assert.equal((await relay(UNTRUSTED, "TO:<a@example.test>", opts)).error?.code, 550);
  const seen: string[] = [];
  const byFn = {
    domains: (s: { name?: string }) => {
      seen.push(s.name ?? "");
      return s.name === "dynamic.test";
    },
    clients: [] as string[],
  };
  assert.equal((await relay(UNTRUSTED, "TO:<a@Dynamic.Test.>", byFn)).accepted, true);
  assert.deepEqual(seen, ["dynamic.test"]);
  // Routed local parts never reach the domain lookup.
  assert.equal((await relay(UNTRUSTED, "TO:<a%b@dynamic.test>", byFn)).error?.code, 550);
  assert.deepEqual(seen, ["dynamic.test"]);
});
