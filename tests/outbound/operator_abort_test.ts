/**
 * An operator's delete of a message whose delivery is stalled by the peer (Exim delaying its RCPT reply in
 * its ACL, as a tarpit does): the attempt ends at once, and the host is not put into back-off for the other
 * messages — the abort was ours, not the host's failure.
 */
import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { ensureExim, eximConfig } from "../helpers/exim.ts";
import { linesOf, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import { freePort } from "../helpers/sink.ts";

Deno.test("delete during a delivery the peer stalls: the attempt ends at once, the host gets no back-off", async () => {
  const exim = await ensureExim();
  const port = await freePort();
  const dir = await eximConfig(
    exim,
    [
      `daemon_smtp_ports = ${port}`,
      "local_interfaces = 127.0.0.1",
      "queue_only = true",
      "tls_advertise_hosts =",
      "acl_smtp_rcpt = acl_rcpt",
    ].join("\n"),
    [
      "acl_rcpt:",
      "  defer local_parts = ^slow",
      "        delay = 60s",
      "        message = 451 4.2.0 slow",
      "  accept",
      "begin routers",
      "bh:",
      "  driver = redirect",
      "  data = :blackhole:",
    ].join("\n"),
  );
  const daemon = new Deno.Command(exim, {
    args: ["-C", `${dir}/exim.conf`, "-bdf", "-oX", String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let connected = 0;
  const up = await startFerryIn({
    routes: [{ name: "exim", domains: "*", hosts: [`[127.0.0.1]:${port}`] }],
    delivery: { enable: true },
    admin: { listen: "127.0.0.1:0" },
    events: { "smtp:connect": () => void connected++ },
  }, { resolver: new MemoryResolver() });
  try {
    await waitFor(
      async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          return true;
        } catch {
          return false;
        }
      },
      8000,
      "Exim listening",
    );
    const slow = await submit(up.port, ["slow@x.test"]);
    await waitFor(() => connected === 1, 8000, "the delivery's session");
    const started = Date.now();
    const res = await fetch(`${up.admin!.url}/api/queue/${slow}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${up.adminToken}` },
    });
    assert.equal(res.status, 200, await res.text());
    console.log(`delete answered after ${Date.now() - started} ms`);
    assert.ok(up.memlog.has("deleted by operator"));

    await submit(up.port, ["fast@x.test"]);
    await waitFor(
      () => linesOf(up.memlog, "=>").length + linesOf(up.memlog, "==").length > 0,
      8000,
      "outcome",
    );
    assert.match(linesOf(up.memlog, "=>")[0] ?? linesOf(up.memlog, "==")[0], /^=> fast@x\.test R=exim /);
    assert.equal(up.memlog.lines.filter((l) => l.fields.event === "host_error").length, 0, "no host error");
  } finally {
    await up.dispose();
    daemon.kill("SIGTERM");
    await daemon.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
