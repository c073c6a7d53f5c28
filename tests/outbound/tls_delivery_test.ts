import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryConfig } from "../../mod.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import {
  type DirFerry,
  firstOutcome,
  linesOf,
  startFerryIn,
  submit,
  waitFor,
  withTlsDownstream,
} from "../helpers/downstream.ts";

// Downstream: a second Ferry with STARTTLS and a certificate for mx.example.test from the test CA.
// Upstream: a Ferry routing example.test to it, by MX from an in-memory resolver or by a host route.

function resolver(): MemoryResolver {
  return new MemoryResolver({
    records: {
      "example.test": { MX: [{ preference: 10, exchange: "mx.example.test" }] },
      "mx.example.test": { A: ["127.0.0.1"] },
      "alias.test": { A: ["127.0.0.1"] },
    },
  });
}

async function upstream(port: number, extra: FerryConfig = {}): Promise<DirFerry> {
  return await startFerryIn({
    routes: [{ domains: "*", mx: true, port }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    ...extra,
    delivery: { enable: true, ...extra.delivery },
  }, { resolver: resolver() });
}

/**
 * The outcome line of one message routed to the downstream at `port` reached as alias.test (its certificate
 * names mx.example.test only), the test CA at `caFile` trusted; `route` adds to the route.
 */
async function viaAlias(port: number, caFile: string, route: Record<string, unknown>): Promise<string> {
  const up = await startFerryIn({
    routes: [{ domains: "example.test", hosts: [`alias.test:${port}`], ...route }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    delivery: { enable: true, tlsVerifyCertificates: caFile },
  }, { resolver: resolver() });
  try {
    await submit(up.port, ["user@example.test"]);
    return await firstOutcome(up.memlog);
  } finally {
    await up.dispose();
  }
}

async function deliveredLine(up: DirFerry): Promise<string> {
  const line = await firstOutcome(up.memlog);
  assert.ok(line.startsWith("=>"), `not delivered: ${linesOf(up.memlog, "==").join("\n")}`);
  return line;
}

Deno.test("STARTTLS to a downstream Ferry: TLS 1.3, CV=no without a trusted CA, received there as esmtps", async () => {
  await withTlsDownstream(async ({ down }) => {
    const up = await upstream(down.port);
    try {
      const id = await submit(up.port, ["user@example.test"]);
      const line = await deliveredLine(up);
      assert.match(
        line,
        /^=> user@example\.test R=mx0 T=smtp H=mx\.example\.test \[127\.0\.0\.1\]:\d+ X=TLS1\.3:/,
      );
      assert.match(line, / CV=no /);
      await waitFor(() => up.memlog.has("Completed"), 15_000, "Completed");
      assert.equal(await up.spool.get(id), undefined);
      const queued = await down.spool.list();
      assert.equal(queued.length, 1);
      assert.equal(queued[0].envelope.protocol, "esmtps");
      assert.equal(queued[0].envelope.sender, "sender@client.test");
      assert.deepEqual(queued[0].envelope.recipients.map((r) => r.address), ["user@example.test"]);
      assert.ok(down.memlog.has(/^<= sender@client\.test .* P=esmtps X=TLS1\.3:/));
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("CV=yes when the CA is trusted (delivery.tlsVerifyCertificates) and the MX name matches", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const up = await upstream(down.port, { delivery: { tlsVerifyCertificates: pki.certFile } });
    try {
      await submit(up.port, ["user@example.test"]);
      assert.match(await deliveredLine(up), / X=TLS1\.3:\S+ CV=yes /);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("CV=no when the CA is trusted but the host name does not match the certificate", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    assert.match(
      await viaAlias(down.port, pki.certFile, {}),
      /^=> user@example\.test .* H=alias\.test \[127\.0\.0\.1\]:\d+ X=TLS1\.3:\S+ CV=no /,
    );
  });
});

Deno.test("tlsVerifyHosts with a CA that did not sign the server's certificate defers and sends nothing", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const other = await pki.newRoot("Unrelated CA");
    const up = await upstream(down.port, {
      delivery: { tlsVerifyCertificates: other.certFile, tlsVerifyHosts: "*" },
    });
    try {
      const id = await submit(up.port, ["user@example.test"]);
      await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
      assert.match(linesOf(up.memlog, "==")[0], /certificate verification failed/);
      assert.equal(linesOf(up.memlog, "=>").length, 0);
      assert.ok(up.memlog.has(/H=mx\.example\.test \[127\.0\.0\.1\]:\d+ .*\(errno TLS\)/));
      const env = await up.spool.get(id);
      assert.equal(env?.recipients[0].status, "pending");
      assert.equal(await down.spool.count(), 0);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("tlsVerifyHosts with the right CA and name delivers (CV=yes)", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const up = await upstream(down.port, {
      delivery: { tlsVerifyCertificates: pki.certFile, tlsVerifyHosts: "*" },
    });
    try {
      await submit(up.port, ["user@example.test"]);
      assert.match(await deliveredLine(up), / CV=yes /);
      assert.equal(await down.spool.count(), 1);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("hostsRequireTls against a downstream without STARTTLS defers with a TLS host error", async () => {
  const down = await startTestFerry({});
  const up = await upstream(down.port, { delivery: { hostsRequireTls: ["127.0.0.1"] } });
  try {
    const id = await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
    assert.match(
      linesOf(up.memlog, "==")[0],
      /^== user@example\.test R=mx0 T=smtp defer H=\S+ \[[^\]]+\]:\d+ TLS=encrypted: hostsRequireTls: TLS required but STARTTLS not offered/,
    );
    assert.ok(
      up.memlog.has(/H=mx\.example\.test \[127\.0\.0\.1\]:\d+ hostsRequireTls: TLS required .*\(errno TLS\)/),
    );
    assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
    assert.equal(await down.spool.count(), 0);
  } finally {
    await up.dispose();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a route's hostsRequireTls overrides the delivery default", async () => {
  const down = await startTestFerry({});
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port: down.port, hostsRequireTls: "*" }],
    delivery: { enable: true },
  }, { resolver: resolver() });
  try {
    await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
    assert.match(linesOf(up.memlog, "==")[0], /TLS required/);
  } finally {
    await up.dispose();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("routes[].tlsVerifyNames: a certificate carrying a listed name or a name under a *.suffix pattern verifies", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const outcome = (tlsVerifyNames?: string[]) =>
      viaAlias(down.port, pki.certFile, {
        tlsVerifyHosts: "*",
        ...(tlsVerifyNames ? { tlsVerifyNames } : {}),
      });
    assert.match(await outcome(["*.example.test"]), /^=> user@example\.test .* H=alias\.test .* CV=yes /);
    assert.match(await outcome(["mx.other.test", "mx.example.test"]), /^=> .* CV=yes /);
    assert.match(await outcome(["mx.other.test", "*.other.test"]), /^== .*certificate does not match/);
    assert.match(await outcome(), /^== .*certificate does not match alias\.test/);
  });
});

Deno.test("tlsVerifyCertHostnames is a host list: only its hosts get the name check (CV=no on a mismatch, still delivered); tlsVerifyHosts checks names whatever it says", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const outcome = (route: Record<string, unknown>) => viaAlias(down.port, pki.certFile, route);
    // Default "*": the name is checked, the mismatch makes the certificate unverified; nothing requires it.
    assert.match(await outcome({}), /^=> user@example\.test .* H=alias\.test .* CV=no /);
    assert.match(await outcome({ tlsVerifyCertHostnames: "alias.test" }), /^=> .* CV=no /);
    // A host not in the list: the chain alone decides.
    assert.match(await outcome({ tlsVerifyCertHostnames: [] }), /^=> .* CV=yes /);
    assert.match(await outcome({ tlsVerifyCertHostnames: "mx.other.test" }), /^=> .* CV=yes /);
    // A host that must verify is name-checked even when the list leaves it out.
    assert.match(
      await outcome({ tlsVerifyHosts: "*", tlsVerifyCertHostnames: [] }),
      /^== .*certificate does not match alias\.test/,
    );
  });
});
