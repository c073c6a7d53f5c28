/**
 * MTA-STS policy fetches are shared and backed off, against real peers: TXT records from unbound, policies
 * served (or refused with 500) by nginx over HTTPS with a test CA, counted from nginx's own access log.
 * Concurrent deliveries to one domain make one fetch; a fetch that fails for a new id leaves the cached
 * policy in force and is not repeated for that id for five minutes (the module's clock is moved instead of
 * waiting).
 */
import assert from "node:assert/strict";
import { DnsClient } from "../../src/dns/client.ts";
import { FETCH_RETRY_MS, mtaStsPolicy, StsCache } from "../../src/outbound/security/mta_sts.ts";
import { TlsClientContext } from "../../src/tls/client.ts";
import { startNginx } from "../helpers/nginx.ts";
import { createPki } from "../helpers/pki.ts";
import { startUnbound } from "../helpers/unbound.ts";
import { acceptedMx } from "./_mta_sts_probe.ts";

const policy = (mx: string) => `version: STSv1\nmode: enforce\nmx: ${mx}\nmax_age: 86400\n`;
const N = 8;

Deno.test("MTA-STS: concurrent deliveries share one fetch; a failed fetch keeps the cached policy and backs off", async () => {
  const pki = await createPki();
  const web = await pki.issue({ cn: "mta-sts", dns: ["mta-sts.share.test", "mta-sts.down.test"] });
  const nginx = await startNginx([
    {
      host: "mta-sts.share.test",
      certFile: web.chainFile,
      keyFile: web.keyFile,
      body: policy("mx1.share.test"),
    },
    { host: "mta-sts.down.test", certFile: web.chainFile, keyFile: web.keyFile, status: 500 },
  ]);
  const unbound = await startUnbound({
    zones: [
      { name: "share.test", records: `mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id=one"` },
      // down.test now publishes a new id, but its policy host answers 500.
      { name: "down.test", records: `mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id=new"` },
    ],
  });
  const dir = await Deno.makeTempDir({ prefix: "ferry-sts-share-" });
  const cacheFile = `${dir}/mta-sts-cache.json`;
  let clock = Date.UTC(2026, 11, 6, 12, 0, 0);
  // The policy cached under the old id (as a restart finds it): only mx1.down.test may be used.
  await Deno.writeTextFile(
    cacheFile,
    JSON.stringify({
      "down.test": {
        id: "old",
        policy: { mode: "enforce", mx: ["mx1.down.test"], maxAge: 86400 },
        fetchedAt: clock,
      },
    }),
  );
  const failures: string[] = [];
  const sts = mtaStsPolicy({
    resolver: new DnsClient({ nameservers: [{ address: "127.0.0.1", port: unbound.port }] }),
    tlsContext: () => new TlsClientContext({ caFile: pki.certFile }),
    cache: new StsCache(cacheFile),
    port: nginx.port,
    timeoutMs: 5000,
    onFailure: (domain, kind, message) => failures.push(`${domain}: ${kind}: ${message}`),
    now: () => clock,
  });
  const all = (domain: string) => Promise.all(Array.from({ length: N }, () => acceptedMx(sts, domain)));
  try {
    // N deliveries at once to a domain with a new policy: one fetch, all of them under that policy.
    for (const got of await all("share.test")) assert.deepEqual(got, ["mx1.share.test"]);
    assert.equal(await nginx.requests("mta-sts.share.test"), 1, "one fetch for N concurrent deliveries");

    // N deliveries at once while the new id's fetch fails: one fetch, and the cached enforce policy still
    // refuses mx2.down.test for each of them.
    for (const got of await all("down.test")) assert.deepEqual(got, ["mx1.down.test"]);
    assert.equal(await nginx.requests("mta-sts.down.test"), 1, "one fetch for N concurrent deliveries");
    assert.equal(failures.length, 1, failures.join("\n"));
    assert.match(
      failures[0],
      /^down\.test: sts-policy-fetch-error: HTTP status 500 from mta-sts\.down\.test/,
    );

    // Later deliveries within five minutes do not fetch again (nor wait for the policy host).
    clock += FETCH_RETRY_MS - 1000;
    for (const got of await all("down.test")) assert.deepEqual(got, ["mx1.down.test"]);
    assert.equal(await nginx.requests("mta-sts.down.test"), 1, "no fetch while the failure is remembered");
    assert.equal(failures.length, 1);

    // After five minutes one delivery tries again (still failing: the cached policy stays in force).
    clock += 2000;
    for (const got of await all("down.test")) assert.deepEqual(got, ["mx1.down.test"]);
    assert.equal(await nginx.requests("mta-sts.down.test"), 2);
    assert.equal(failures.length, 2);
    const cache = JSON.parse(await Deno.readTextFile(cacheFile));
    assert.equal(cache["down.test"].id, "old", "the cached policy is kept");
  } finally {
    await sts.refreshes();
    await nginx.stop();
    await unbound.stop();
    await pki.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});
