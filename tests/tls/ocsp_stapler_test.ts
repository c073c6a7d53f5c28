import assert from "node:assert/strict";
import { OcspStapler } from "../../src/tls/ocsp_stapler.ts";
import { makeOcspPki, type OcspPki } from "../helpers/ocsp_pki.ts";

/** Polls `pred` until it holds or `ms` pass. */
async function waitFor(pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Writes a file under a temp name and renames it over `path`, as an operator's fetch script would. */
async function replaceAtomically(path: string, data: Uint8Array): Promise<void> {
  await Deno.writeFile(`${path}.new`, data);
  await Deno.rename(`${path}.new`, path);
}

async function withPki(fn: (pki: OcspPki) => Promise<void>): Promise<void> {
  const pki = await makeOcspPki();
  try {
    await fn(pki);
  } finally {
    await pki.cleanup();
  }
}

Deno.test("OcspStapler file mode serves only a valid response and follows atomic replacements", async () => {
  await withPki(async (pki) => {
    const leaf = await pki.issue("mail.example.test");
    const other = await pki.issue("other.example.test");
    const good = await pki.respond(leaf);
    const file = `${pki.dir}/leaf.ocsp`;
    await Deno.writeFile(file, good.slice(0, 40)); // truncated
    const logs: string[] = [];
    const stapler = new OcspStapler({ certFile: leaf.chain, file, log: (l) => logs.push(l), pollMs: 20 });
    await stapler.start();
    try {
      assert.equal(stapler.current(), undefined, "a truncated file is not stapled");
      for (let i = 0; i < 20; i++) stapler.current();
      const polled = stapler.polls;
      await waitFor(() => stapler.polls >= polled + 3); // several polls of an unchanged file
      const warnings = logs.filter((l) => l.includes("warning"));
      assert.equal(warnings.length, 1, `warned once: ${logs.join(" | ")}`);
      assert.match(warnings[0], /does not parse/);

      await replaceAtomically(file, good);
      await waitFor(() => stapler.current() !== undefined);
      assert.deepEqual(stapler.current(), good);
      assert.ok(logs.some((l) => /loaded .*status good.*stapling it/.test(l)));

      await replaceAtomically(file, await pki.respond(other));
      await waitFor(() => stapler.current() === undefined);
      assert.match(logs.at(-1)!, /not for this certificate/);

      await Deno.remove(file);
      await waitFor(() => logs.at(-1)!.includes("file does not exist"));
      assert.equal(stapler.current(), undefined);
    } finally {
      stapler.stop();
    }
  });
});

Deno.test("OcspStapler file mode does not staple a response saying revoked", async () => {
  await withPki(async (pki) => {
    const revoked = await pki.issue("revoked.example.test");
    await pki.revoke(revoked);
    const file = `${pki.dir}/revoked.ocsp`;
    await Deno.writeFile(file, await pki.respond(revoked));
    const logs: string[] = [];
    const stapler = new OcspStapler({ certFile: revoked.chain, file, log: (l) => logs.push(l) });
    await stapler.start();
    try {
      assert.equal(stapler.current(), undefined);
      assert.match(logs.join("\n"), /warning: not stapling .*revoked: Certificate is revoked at/);
    } finally {
      stapler.stop();
    }
  });
});

Deno.test("OcspStapler stops stapling when nextUpdate passes and refuses an expired file", async () => {
  await withPki(async (pki) => {
    const leaf = await pki.issue("mail.example.test");
    const file = `${pki.dir}/leaf.ocsp`;
    await Deno.writeFile(file, await pki.respond(leaf, { nmin: 1 }));
    let skewMs = 0;
    const logs: string[] = [];
    const opts = {
      certFile: leaf.crt,
      issuerFile: pki.caCrt,
      file,
      log: (l: string) => logs.push(l),
      now: () => new Date(Date.now() + skewMs),
      pollMs: 20,
    };
    const stapler = new OcspStapler(opts);
    await stapler.start();
    try {
      assert.ok(stapler.current());
      skewMs = 2 * 60_000;
      assert.equal(stapler.current(), undefined);
      assert.equal(stapler.current(), undefined);
      assert.equal(logs.filter((l) => l.includes("expired")).length, 1);
    } finally {
      stapler.stop();
    }
    const late = new OcspStapler(opts);
    await late.start();
    try {
      assert.equal(late.current(), undefined);
      assert.match(logs.at(-1)!, /warning: .*expired at nextUpdate/);
    } finally {
      late.stop();
    }
  });
});

Deno.test("OcspStapler refuses a response whose signer certificate expires before nextUpdate", async () => {
  await withPki(async (pki) => {
    const leaf = await pki.issue("mail.example.test");
    const short = await pki.issue("Short OCSP Signer", {
      profile: "ocsp-signer",
      notAfter: new Date(Date.now() + 3_600_000),
    });
    const file = `${pki.dir}/leaf.ocsp`;
    await Deno.writeFile(file, await pki.respond(leaf, { signer: short, ndays: 2 }));
    const logs: string[] = [];
    const stapler = new OcspStapler({ certFile: leaf.chain, file, log: (l) => logs.push(l) });
    await stapler.start();
    try {
      assert.equal(stapler.current(), undefined);
      assert.match(logs.join("\n"), /Short OCSP Signer.* expires at .* before the response's nextUpdate/);
    } finally {
      stapler.stop();
    }
  });
});

Deno.test("OcspStapler rejects unusable configuration", async () => {
  await withPki(async (pki) => {
    const leaf = await pki.issue("mail.example.test");
    assert.throws(() => new OcspStapler({ certFile: leaf.chain, log: () => {} }), /file or fetch/);
    const noIssuer = new OcspStapler({ certFile: leaf.crt, file: `${pki.dir}/x`, log: () => {} });
    await assert.rejects(noIssuer.start(), /no issuer certificate/);
    await Deno.writeTextFile(`${pki.dir}/ca2.pem`, (await Deno.readTextFile(pki.caCrt)).repeat(2));
    const noUrl = new OcspStapler({ certFile: `${pki.dir}/ca2.pem`, fetch: true, log: () => {} });
    await assert.rejects(noUrl.start(), /names no http OCSP responder/);
  });
});

Deno.test("OcspStapler fetch mode fetches from the AIA responder, stores the file atomically and serves it", async () => {
  await withPki(async (pki) => {
    const leaf = await pki.issue("mail.example.test");
    const store = await Deno.makeTempDir({ dir: pki.dir });
    const file = `${store}/leaf.ocsp`;
    let responder = await pki.startResponder();
    const logs: string[] = [];
    const stapler = new OcspStapler({
      certFile: leaf.chain,
      file,
      fetch: true,
      log: (l) => logs.push(l),
      retryInitialMs: 50,
      retryMaxMs: 200,
    });
    try {
      await stapler.start();
      const check = await stapler.refresh();
      assert.equal(check?.ok, true, check?.reason);
      const served = stapler.current();
      assert.ok(served);
      assert.deepEqual(await Deno.readFile(file), served);
      const names = [...Deno.readDirSync(store)].map((e) => e.name);
      assert.deepEqual(names, ["leaf.ocsp"], "no temp file left behind");
      // `openssl ocsp -nmin 1` gives 60 s of validity: the refresh is due at half of it
      const refresh = /next refresh in (\d+) s/.exec(logs.join("\n"));
      assert.ok(refresh && Number(refresh[1]) >= 25 && Number(refresh[1]) <= 31, logs.join("\n"));

      // Responder down: the last good response keeps being stapled; retries back off up to the cap.
      await responder.stop();
      assert.equal(await stapler.refresh(), undefined);
      assert.deepEqual(stapler.current(), served);
      await waitFor(() => logs.filter((l) => l.includes("fetch failed")).length >= 4);
      const delays = logs.filter((l) => l.includes("fetch failed")).map((l) =>
        Number(/retry in (\d+) ms/.exec(l)![1])
      );
      assert.deepEqual(delays.slice(0, 4), [50, 100, 200, 200]);
      assert.match(logs.at(-1)!, /still stapling the response valid until/);
      assert.deepEqual(stapler.current(), served);

      // Back up: the next retry succeeds and the failure count resets.
      responder = await pki.startResponder();
      const before = logs.length;
      await waitFor(() => logs.slice(before).some((l) => l.includes("fetched from")));
      assert.ok(stapler.current());
    } finally {
      stapler.stop();
      await responder.stop();
    }

    // A restart serves the stored response at once, without waiting for the (now absent) responder.
    const restarted = new OcspStapler({ certFile: leaf.chain, file, fetch: true, log: (l) => logs.push(l) });
    const before = logs.length;
    await restarted.start();
    try {
      assert.ok(restarted.current());
      assert.match(logs.slice(before).join("\n"), /loaded .*stapling it/);
      assert.doesNotMatch(logs.slice(before).join("\n"), /fetch failed/);
    } finally {
      restarted.stop();
    }
  });
});

Deno.test("OcspStapler fetch mode staples nothing for a revoked certificate", async () => {
  await withPki(async (pki) => {
    const revoked = await pki.issue("revoked.example.test");
    await pki.revoke(revoked);
    const responder = await pki.startResponder();
    const logs: string[] = [];
    const stapler = new OcspStapler({ certFile: revoked.chain, fetch: true, log: (l) => logs.push(l) });
    try {
      await stapler.start();
      const check = await stapler.refresh();
      assert.equal(check?.status, "revoked");
      assert.equal(stapler.current(), undefined);
      assert.match(logs.join("\n"), /says revoked.*stapling nothing/);
    } finally {
      stapler.stop();
      await responder.stop();
    }
  });
});
