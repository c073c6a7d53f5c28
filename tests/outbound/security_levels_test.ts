/** Unit logic of the security engine: levels only rise, the first failure wins, pooled sessions must fit. */
import assert from "node:assert/strict";
import { HostList } from "../../src/core/host_list.ts";
import { SecurityEngine, type SecurityPolicy } from "../../src/outbound/security/engine.ts";
import { type Achieved, meets, Requirement, traceOf } from "../../src/outbound/security/levels.ts";
import { localListsPolicy } from "../../src/outbound/security/local_lists.ts";
import { ConnectionPool } from "../../src/outbound/connection_pool.ts";
import type { OpenSession } from "../../src/outbound/transport.ts";

const target = { name: "mx.example.test", ip: "192.0.2.1", port: 25, preference: 10 };

Deno.test("Requirement: a lower level never replaces a higher one, and keeps who set it", () => {
  const r = new Requirement();
  r.raiseTls(2, "tlsVerifyHosts");
  r.raiseTls(1, "hostsRequireTls");
  r.raiseTls(0, "other");
  assert.equal(r.tls, 2);
  assert.equal(r.tlsBy, "tlsVerifyHosts");
  r.raiseMx(1, "mta-sts");
  r.raiseMx(0, "x");
  assert.equal(r.mx, 1);
  r.fail("mta-sts", "first");
  r.fail("dane", "second");
  assert.deepEqual(r.failure, { policy: "mta-sts", message: "first", errno: "TLS", definite: true });
});

Deno.test("SecurityEngine: a later policy cannot lower what an earlier one required", async () => {
  const lower: SecurityPolicy = {
    name: "lower",
    prepareDomain: () =>
      Promise.resolve((req) => {
        req.raiseTls(0, "lower");
      }),
  };
  const engine = new SecurityEngine([
    localListsPolicy({
      hostsRequireTls: new HostList([]),
      tlsVerifyHosts: new HostList(["mx.example.test"]),
      tlsTryVerifyHosts: new HostList([]),
      tlsVerifyCertHostnames: new HostList([]),
      hostsRequestOcsp: new HostList([]),
      hostsRequireOcsp: new HostList([]),
    }),
    lower,
  ]);
  const prepared = await engine.prepare({ domain: "example.test", viaMx: true, mxSecure: false });
  const req = await prepared.requirementFor(target);
  assert.equal(req.tls, 2);
  assert.equal(req.tlsBy, "tlsVerifyHosts");
  const other = await prepared.requirementFor({ ...target, name: "mx2.example.test" });
  assert.equal(other.tls, 0);
});

Deno.test("SecurityEngine: a policy whose preparation throws refuses every host of the domain", async () => {
  const broken: SecurityPolicy = { name: "mta-sts", prepareDomain: () => Promise.reject(new Error("boom")) };
  const prepared = await new SecurityEngine([broken]).prepare({
    domain: "example.test",
    viaMx: true,
    mxSecure: false,
  });
  assert.deepEqual((await prepared.requirementFor(target)).failure, {
    policy: "mta-sts",
    message: "boom",
    errno: "TLS",
    // A policy that could not be prepared may work next time: temporary, so a REQUIRETLS message defers.
    definite: false,
  });
});

Deno.test("meets(): an opportunistic session cannot carry a delivery that needs authentication or DANE", () => {
  const opportunistic: Achieved = { tls: 1, dane: false, tls12: true, ocsp: false };
  const pkix: Achieved = { tls: 2, dane: false, tls12: true, ocsp: false, named: true };
  // The chain verified but no name was checked (tlsVerifyCertHostnames excluded the host).
  const unnamed: Achieved = { tls: 2, dane: false, tls12: true, ocsp: false, named: false };
  const dane: Achieved = { tls: 2, dane: true, tlsaUsage: 3, tls12: true, ocsp: false };
  const none = new Requirement();
  const auth = new Requirement();
  auth.raiseTls(2, "tlsVerifyHosts");
  const daneReq = new Requirement();
  daneReq.raiseTls(2, "dane");
  daneReq.dane = { tlsa: [], baseDomain: "mx.example.test", names: [] };
  assert.equal(meets(opportunistic, none), true);
  assert.equal(meets(opportunistic, auth), false);
  assert.equal(meets(pkix, auth), true);
  assert.equal(meets(unnamed, auth), false);
  assert.equal(meets(unnamed, none), true);
  assert.equal(meets(dane, auth), false, "DANE-EE checked no name");
  assert.equal(meets(pkix, daneReq), false);
  assert.equal(meets(dane, daneReq), true);
  assert.equal(traceOf(dane, daneReq).policy, "dane");
  assert.equal(traceOf(dane, daneReq).tlsaUsage, 3);
  assert.equal(traceOf(pkix, none).policy, "pkix");
  assert.equal(traceOf(opportunistic, auth).policy, "opportunistic");
  assert.equal(traceOf({ tls: 0, dane: false, tls12: false, ocsp: false }, none).policy, "none");
  const sts = new Requirement();
  sts.mtaSts = "enforce";
  assert.equal(traceOf(pkix, sts).policy, "mta-sts(enforce)");
});

Deno.test("ConnectionPool: an idle session that does not fit is closed and a new one is opened", async () => {
  const pool = new ConnectionPool({ perHost: 2, idleTimeoutMs: 60_000 });
  let closedCount = 0;
  const fake = (tls: 0 | 1 | 2): OpenSession => ({
    client: { closed: false } as OpenSession["client"],
    target,
    achieved: { tls, dane: false, tls12: true, ocsp: false, named: tls === 2 },
    tryPrdr: false,
    close: () => {
      closedCount++;
      return Promise.resolve();
    },
  });
  const first = await pool.acquire("k", () => Promise.resolve(fake(1)));
  pool.release("k", first, true);
  const need = new Requirement();
  need.raiseTls(2, "mta-sts");
  let opened = 0;
  const second = await pool.acquire("k", () => {
    opened++;
    return Promise.resolve(fake(2));
  }, (s) => meets(s.achieved, need));
  assert.equal(opened, 1);
  assert.equal(closedCount, 1, "the opportunistic session was closed, not reused");
  assert.equal(second.achieved.tls, 2);
  pool.release("k", second, true);
  const third = await pool.acquire(
    "k",
    () => Promise.reject(new Error("must reuse")),
    (s) => meets(s.achieved, need),
  );
  assert.equal(third, second);
  pool.release("k", third, false);
  await pool.close();
});
