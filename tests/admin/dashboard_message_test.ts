/**
 * The message page and the API show each recipient's TLS decision and the peer's reply: one message to a
 * STARTTLS peer (a second Ferry, delivered) and to a dead port (deferred, so the message stays queued).
 */

import assert from "node:assert/strict";
import { api, waitFor } from "./_admin.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { freePort } from "../helpers/sink.ts";
import { runSwaks, spoolIdIn } from "../helpers/peers.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { queueShowResponse } from "../../src/admin/api_schemas.ts";
import { TOKEN_COOKIE } from "../../src/admin/bearer.ts";

/** The text of each cell of the recipients table's row for `address`. */
function recipientRow(html: string, address: string): string[] {
  const table = /<table id="recipients">([\s\S]*?)<\/table>/.exec(html)?.[1] ?? "";
  const row = [...table.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => m[1]).find((r) =>
    r.includes(`<td>${address}</td>`)
  );
  assert.ok(row, `a row for ${address}`);
  return [...row.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((m) => m[1].replace(/&#39;/g, "'"));
}

Deno.test("message page: each recipient's TLS decision, host and the peer's reply, delivered and deferred alike", async () => {
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "mx.ok.test", dns: ["mx.ok.test"] });
  const down = await startTestFerry({
    relay: { domains: "*", clients: ["127.0.0.0/8"] },
    tls: ferryTls(leaf),
  });
  const dead = await freePort();
  const up = await startTestFerry({
    relay: { domains: ["ok.test", "dead.test"], clients: [] },
    delivery: { enable: true, tlsVerifyCertificates: pki.certFile },
    routes: [
      { name: "ok", domains: "ok.test", hosts: ["mx.ok.test"], port: down.port },
      { name: "dead", domains: "dead.test", hosts: ["127.0.0.1"], port: dead },
    ],
    admin: { listen: "127.0.0.1:0" },
  }, { resolver: new MemoryResolver({ records: { "mx.ok.test": { A: ["127.0.0.1"] } } }) });
  const f = { ...up, base: up.admin!.url };
  try {
    const sent = await runSwaks(up.port, ["--from", "s@client.test", "--to", "a@ok.test,b@dead.test"]);
    const id = spoolIdIn(sent.stdout)!;
    await waitFor(() => up.memlog.has("=> a@ok.test") && up.memlog.has("== b@dead.test"));
    const delivered = up.memlog.lines.find((l) => l.text.startsWith("=> a@ok.test"))!.text;
    assert.match(delivered, /CV=yes TLS=pkix/);

    const res = await fetch(`${f.base}/dashboard/messages/${id}`, {
      headers: { cookie: `${TOKEN_COOKIE}=${up.adminToken}` },
    });
    assert.equal(res.status, 200);
    const html = await res.text();
    const [, status, attempts, , tls, host, reply] = recipientRow(html, "a@ok.test");
    assert.deepEqual([status, attempts, host], ["delivered", "1", "mx.ok.test"]);
    assert.match(tls, /^pkix CV=yes TLS1\.[23] \S+$/);
    assert.match(reply, /^250 2\.0\.0 OK id=/, `the downstream Ferry's reply to the final dot: ${reply}`);
    const deferred = recipientRow(html, "b@dead.test");
    assert.equal(deferred[1], "pending");
    assert.equal(deferred[4], "—", "no TLS: the connection was refused");
    assert.match(deferred[6], /refused|connect/i);
    assert.match(html, /<pre id="headers">Received: from /);

    // "TLS by destination" names the policy too.
    const tlsPage = await (await fetch(`${f.base}/dashboard/tls`, {
      headers: { cookie: `${TOKEN_COOKIE}=${up.adminToken}` },
    })).text();
    const okRow = [...tlsPage.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => m[1]).find((r) =>
      r.includes("<td>ok.test</td>")
    );
    assert.match(okRow ?? "", /<td>mx\.ok\.test<\/td><td>pkix<\/td>/);

    // The API shows the same facts in the envelope.
    const view = queueShowResponse.parse((await api(f, `/api/queue/${id}`)).body);
    const a = view.envelope.recipients.find((r) => r.address === "a@ok.test")!;
    assert.equal((a.extra?.tls as { policy: string }).policy, "pkix");
    assert.match(a.extra?.reply as string, /^250 2\.0\.0 OK id=/);
  } finally {
    await up.stop();
    await Deno.remove(up.dir, { recursive: true }).catch(() => {});
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});
