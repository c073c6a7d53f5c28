/**
 * MTA-STS policy refresh before expiry (RFC 8461 §3.3, §5.1) against real peers: the TXT record from unbound,
 * the policy served by nginx over HTTPS with a test CA, the durable cache in a temp file. The policy module's
 * clock is moved instead of waiting out max_age: a policy past half its max_age is still used for the
 * delivery that notices and is refreshed in the background; a changed policy reaches the cache; with nginx
 * stopped the refresh fails, is reported, and the cached policy stays in force until it expires.
 */
import assert from "node:assert/strict";
import { DnsClient } from "../../src/dns/client.ts";
import { mtaStsPolicy, StsCache } from "../../src/outbound/security/mta_sts.ts";
import { TlsClientContext } from "../../src/tls/client.ts";
import { startNginx } from "../helpers/nginx.ts";
import { createPki } from "../helpers/pki.ts";
import { startUnbound } from "../helpers/unbound.ts";
import { acceptedMx } from "./_mta_sts_probe.ts";

const DAY = 86_400_000;
const policy = (mx: string) => `version: STSv1\nmode: enforce\nmx: ${mx}\nmax_age: 86400\n`;

Deno.test("MTA-STS: a policy past half its max_age is refreshed in the background; a failed refresh keeps it", async () => {
  const pki = await createPki();
  const web = await pki.issue({ cn: "mta-sts.refresh.test", dns: ["mta-sts.refresh.test"] });
  const nginx = await startNginx([{
    host: "mta-sts.refresh.test",
    certFile: web.chainFile,
    keyFile: web.keyFile,
    body: policy("mx1.refresh.test"),
  }]);
  let nginxRunning = true;
  const unbound = await startUnbound({
    zones: [{
      name: "refresh.test",
      records: `mta-sts IN A 127.0.0.1\n_mta-sts IN TXT "v=STSv1; id=20261206"`,
    }],
  });
  const dir = await Deno.makeTempDir({ prefix: "ferry-sts-refresh-" });
  const cacheFile = `${dir}/mta-sts-cache.json`;
  const failures: string[] = [];
  let clock = Date.UTC(2026, 11, 6, 12, 0, 0);
  const resolver = new DnsClient({ nameservers: [{ address: "127.0.0.1", port: unbound.port }] });
  const sts = mtaStsPolicy({
    resolver,
    tlsContext: () => new TlsClientContext({ caFile: pki.certFile }),
    cache: new StsCache(cacheFile),
    port: nginx.port,
    timeoutMs: 5000,
    onFailure: (domain, kind) => failures.push(`${domain}: ${kind}`),
    now: () => clock,
  });
  const accepted = () => acceptedMx(sts, "refresh.test");
  const cached = async () => {
    const data = JSON.parse(await Deno.readTextFile(cacheFile));
    return data["refresh.test"] as { policy: { mx: string[] }; fetchedAt: number };
  };
  try {
    // First delivery: fetched and cached.
    assert.deepEqual(await accepted(), ["mx1.refresh.test"]);
    const first = await cached();
    assert.deepEqual(first.policy.mx, ["mx1.refresh.test"]);
    assert.equal(first.fetchedAt, clock);

    // The served policy changes under the same id. Before half of max_age, nothing is fetched.
    await nginx.setBody("mta-sts.refresh.test", policy("mx2.refresh.test"));
    clock += DAY / 2 - 60_000;
    assert.deepEqual(await accepted(), ["mx1.refresh.test"]);
    await sts.refreshes();
    assert.equal((await cached()).fetchedAt, first.fetchedAt, "no refresh before half of max_age");

    // Past half of max_age: this delivery still uses the cached policy (no wait), the refresh runs behind it.
    clock += 120_000;
    assert.deepEqual(await accepted(), ["mx1.refresh.test"]);
    await sts.refreshes();
    const second = await cached();
    assert.deepEqual(second.policy.mx, ["mx2.refresh.test"], "the cache holds the refreshed policy");
    assert.equal(second.fetchedAt, clock);
    assert.deepEqual(await accepted(), ["mx2.refresh.test"]);
    assert.deepEqual(failures, []);

    // The policy host goes away: the refresh fails, is reported, and the cached policy stays in force.
    await nginx.stop();
    nginxRunning = false;
    clock += DAY / 2 + 60_000;
    assert.deepEqual(await accepted(), ["mx2.refresh.test"]);
    await sts.refreshes();
    assert.deepEqual(failures, ["refresh.test: sts-policy-fetch-error"]);
    assert.deepEqual(await cached(), second, "the cache file is unchanged");
    // A failed refresh is not retried on every delivery (at most every 5 minutes).
    assert.deepEqual(await accepted(), ["mx2.refresh.test"]);
    await sts.refreshes();
    assert.equal(failures.length, 1);
    clock += 300_000;
    assert.deepEqual(await accepted(), ["mx2.refresh.test"]);
    await sts.refreshes();
    assert.equal(failures.length, 2);
    // Until it expires: past max_age with no successful refresh, no policy applies.
    clock = second.fetchedAt + DAY + 1000;
    assert.equal(
      await sts.prepareDomain({ domain: "refresh.test", viaMx: true, mxSecure: false }),
      undefined,
    );
  } finally {
    await sts.refreshes();
    if (nginxRunning) await nginx.stop();
    await unbound.stop();
    await pki.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});
