import assert from "node:assert/strict";
import { buildOcspRequest, checkOcspResponse, ocspUrlOf } from "../../src/tls/ocsp.ts";
import { fetchOcspResponse } from "../../src/tls/ocsp_fetch.ts";
import { freePort, makeOcspPki } from "../helpers/ocsp_pki.ts";

Deno.test("fetchOcspResponse() POSTs to openssl ocsp and gets a response that checks", async () => {
  const pki = await makeOcspPki();
  const leaf = await pki.issue("mail.example.test");
  const responder = await pki.startResponder();
  try {
    const der = await fetchOcspResponse(ocspUrlOf(leaf.der)!, buildOcspRequest(leaf.der, pki.caDer), {
      timeoutMs: 5000,
    });
    const c = await checkOcspResponse(der, leaf.der, pki.caDer);
    assert.equal(c.ok, true, c.reason);
  } finally {
    await responder.stop();
    await pki.cleanup();
  }
});

/** Runs `fn` against a loopback HTTP server answering every request with `handler`. */
async function withServer(
  handler: (req: Request) => Response | Promise<Response>,
  fn: (url: string) => Promise<void>,
) {
  const ac = new AbortController();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} }, handler);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/`);
  } finally {
    ac.abort();
    await server.finished;
  }
}

const req = Uint8Array.of(0x30, 0x00);

Deno.test("fetchOcspResponse() sends a POST with the OCSP request content type", async () => {
  let seen: { method: string; type: string | null; body: Uint8Array } | undefined;
  await withServer(async (r) => {
    seen = {
      method: r.method,
      type: r.headers.get("content-type"),
      body: new Uint8Array(await r.arrayBuffer()),
    };
    return new Response(Uint8Array.of(1, 2, 3));
  }, async (url) => {
    const body = await fetchOcspResponse(url, req, { timeoutMs: 2000 });
    assert.deepEqual(body, Uint8Array.of(1, 2, 3), "a missing content type is accepted");
  });
  assert.equal(seen?.method, "POST");
  assert.equal(seen?.type, "application/ocsp-request");
  assert.deepEqual(seen?.body, req);
});

Deno.test("fetchOcspResponse() rejects an HTTP error status", async () => {
  await withServer(() => new Response("busy", { status: 503 }), async (url) => {
    await assert.rejects(fetchOcspResponse(url, req, { timeoutMs: 2000 }), /HTTP 503/);
  });
});

Deno.test("fetchOcspResponse() rejects an HTML page and an empty body", async () => {
  await withServer(
    () => new Response("<html></html>", { headers: { "content-type": "text/html" } }),
    async (url) => {
      await assert.rejects(fetchOcspResponse(url, req, { timeoutMs: 2000 }), /text\/html/);
    },
  );
  await withServer(() => new Response(null, { status: 200 }), async (url) => {
    await assert.rejects(fetchOcspResponse(url, req, { timeoutMs: 2000 }), /empty body/);
  });
});

Deno.test("fetchOcspResponse() rejects a body larger than maxBytes, declared or streamed", async () => {
  await withServer(() => new Response(new Uint8Array(5000)), async (url) => {
    await assert.rejects(
      fetchOcspResponse(url, req, { timeoutMs: 2000, maxBytes: 4096 }),
      /larger than 4096/,
    );
  });
  await withServer(() => {
    let n = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (n++ < 10) c.enqueue(new Uint8Array(1000));
        else c.close();
      },
    });
    return new Response(stream, { headers: { "content-type": "application/ocsp-response" } });
  }, async (url) => {
    await assert.rejects(
      fetchOcspResponse(url, req, { timeoutMs: 2000, maxBytes: 4096 }),
      /larger than 4096/,
    );
  });
});

Deno.test("fetchOcspResponse() gives up at its deadline when the responder never answers", async () => {
  let release!: () => void;
  const hung = new Promise<void>((r) => release = r);
  await withServer(async () => {
    await hung;
    return new Response("late");
  }, async (url) => {
    const t0 = Date.now();
    await assert.rejects(fetchOcspResponse(url, req, { timeoutMs: 200 }), /timed out/);
    assert.ok(Date.now() - t0 < 2000);
    release();
  });
});

Deno.test("fetchOcspResponse() fails fast when nothing listens and honours an abort signal", async () => {
  const url = `http://127.0.0.1:${freePort()}/`;
  await assert.rejects(fetchOcspResponse(url, req, { timeoutMs: 2000 }), /OCSP request to .* failed/);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(fetchOcspResponse(url, req, { timeoutMs: 2000, signal: ac.signal }), /failed/);
});
