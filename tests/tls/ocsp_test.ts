import assert from "node:assert/strict";
import * as pkijs from "pkijs";
import { buildOcspRequest, checkOcspResponse, ocspUrlOf } from "../../src/tls/ocsp.ts";
import { makeOcspPki } from "../helpers/ocsp_pki.ts";

Deno.test("checkOcspResponse() judges responses made by openssl ocsp", async (t) => {
  const pki = await makeOcspPki();
  try {
    const leaf = await pki.issue("mail.example.test");
    const other = await pki.issue("other.example.test");
    const revoked = await pki.issue("revoked.example.test");
    await pki.revoke(revoked);
    const good = await pki.respond(leaf);

    await t.step("a response by the delegated signer saying good is ok", async () => {
      const c = await checkOcspResponse(good, leaf.der, pki.caDer);
      assert.equal(c.status, "good", c.reason);
      assert.equal(c.ok, true);
      assert.ok(c.thisUpdate! <= new Date() && c.nextUpdate! > new Date());
      assert.ok(c.signerNotAfter! > c.nextUpdate!);
    });

    await t.step("a response signed by the issuer itself is ok", async () => {
      const r = await pki.respond(leaf, { signer: { crt: pki.caCrt, key: pki.caKey } });
      const c = await checkOcspResponse(r, leaf.der, pki.caDer);
      assert.equal(c.ok, true, c.reason);
    });

    await t.step("a revoked certificate gives status revoked, not ok", async () => {
      const c = await checkOcspResponse(await pki.respond(revoked), revoked.der, pki.caDer);
      assert.equal(c.ok, false);
      assert.equal(c.status, "revoked");
      assert.match(c.reason!, /revoked at \d{4}-/);
    });

    await t.step("a response for another certificate is invalid", async () => {
      const c = await checkOcspResponse(good, other.der, pki.caDer);
      assert.equal(c.ok, false);
      assert.equal(c.status, "invalid");
      assert.match(c.reason!, /not for this certificate/);
    });

    await t.step("a response checked against an unrelated issuer is invalid", async () => {
      const c = await checkOcspResponse(good, leaf.der, leaf.der);
      assert.equal(c.ok, false);
      assert.equal(c.status, "invalid");
    });

    await t.step("a response past its nextUpdate is invalid", async () => {
      const r = await pki.respond(leaf, { nmin: 1 });
      assert.equal((await checkOcspResponse(r, leaf.der, pki.caDer)).ok, true);
      const c = await checkOcspResponse(r, leaf.der, pki.caDer, { now: new Date(Date.now() + 2 * 60_000) });
      assert.equal(c.ok, false);
      assert.match(c.reason!, /expired at nextUpdate/);
    });

    await t.step("a response whose thisUpdate is beyond the clock skew is invalid", async () => {
      const c = await checkOcspResponse(good, leaf.der, pki.caDer, {
        now: new Date(Date.now() - 10 * 60_000),
      });
      assert.equal(c.ok, false);
      assert.match(c.reason!, /thisUpdate .* in the future/);
      const skewed = await checkOcspResponse(good, leaf.der, pki.caDer, {
        now: new Date(Date.now() - 2 * 60_000),
      });
      assert.equal(skewed.ok, true, skewed.reason);
    });

    await t.step("a signer certificate expiring before nextUpdate is rejected with that reason", async () => {
      const short = await pki.issue("Short-lived OCSP Signer", {
        profile: "ocsp-signer",
        notAfter: new Date(Date.now() + 3_600_000),
      });
      const c = await checkOcspResponse(
        await pki.respond(leaf, { signer: short, ndays: 1 }),
        leaf.der,
        pki.caDer,
      );
      assert.equal(c.ok, false);
      assert.equal(c.status, "invalid");
      assert.match(c.reason!, /Short-lived OCSP Signer.* expires at .* before the response's nextUpdate/);
      assert.ok(c.signerNotAfter! < c.nextUpdate!);
    });

    await t.step("a signer certificate without id-kp-OCSPSigning is rejected", async () => {
      const plain = await pki.issue("Plain Signer", { profile: "no-eku" });
      const c = await checkOcspResponse(await pki.respond(leaf, { signer: plain }), leaf.der, pki.caDer);
      assert.equal(c.ok, false);
      assert.match(c.reason!, /lacks the id-kp-OCSPSigning/);
    });

    await t.step("a signer certificate from another CA is rejected", async () => {
      const foreign = await makeOcspPki();
      try {
        const r = await pki.respond(leaf, { signer: foreign.ocspSigner });
        const c = await checkOcspResponse(r, leaf.der, pki.caDer);
        assert.equal(c.ok, false);
        assert.match(c.reason!, /not issued by the certificate's issuer/);
      } finally {
        await foreign.cleanup();
      }
    });

    await t.step("a response with a corrupted signature is invalid", async () => {
      type Bytes = Uint8Array<ArrayBuffer>;
      const outer = pkijs.OCSPResponse.fromBER(good as Bytes);
      const basic = pkijs.BasicOCSPResponse.fromBER(
        outer.responseBytes!.response.valueBlock.valueHexView as Bytes,
      );
      const sig = basic.signature.valueBlock.valueHexView;
      const tampered = good.slice();
      const at = indexOf(tampered, sig);
      assert.ok(at > 0);
      tampered[at + 10] ^= 0xff;
      const c = await checkOcspResponse(tampered, leaf.der, pki.caDer);
      assert.equal(c.ok, false);
      assert.match(c.reason!, /signature/);
    });

    await t.step("truncated, empty, padded and non-OCSP bytes are invalid, never thrown", async () => {
      for (
        const bytes of [
          good.slice(0, good.length - 1),
          good.slice(0, 10),
          new Uint8Array(),
          Uint8Array.of(...good, 0),
          leaf.der,
          new TextEncoder().encode("<html>not found</html>"),
        ]
      ) {
        const c = await checkOcspResponse(bytes, leaf.der, pki.caDer);
        assert.equal(c.ok, false);
        assert.equal(c.status, "invalid");
        assert.ok(c.reason);
      }
    });

    await t.step("a responder error status is invalid and named", async () => {
      // OCSPResponse { responseStatus ENUMERATED tryLater(3) } with no responseBytes
      const c = await checkOcspResponse(Uint8Array.of(0x30, 0x03, 0x0a, 0x01, 0x03), leaf.der, pki.caDer);
      assert.equal(c.ok, false);
      assert.match(c.reason!, /tryLater/);
    });

    await t.step("buildOcspRequest() makes a request openssl ocsp answers for this certificate", async () => {
      await Deno.writeFile(`${pki.dir}/ferry.req`, buildOcspRequest(leaf.der, pki.caDer));
      const out = await new Deno.Command("openssl", {
        args: [
          "ocsp",
          "-index",
          pki.index,
          "-CA",
          pki.caCrt,
          "-rsigner",
          pki.ocspSigner.crt,
          "-rkey",
          pki.ocspSigner.key,
          "-reqin",
          `${pki.dir}/ferry.req`,
          "-respout",
          `${pki.dir}/ferry.resp`,
          "-nmin",
          "5",
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const c = await checkOcspResponse(await Deno.readFile(`${pki.dir}/ferry.resp`), leaf.der, pki.caDer);
      assert.equal(c.ok, true, c.reason);
    });

    await t.step("ocspUrlOf() reads the AIA OCSP URL and is undefined without one", () => {
      assert.equal(ocspUrlOf(leaf.der), `http://127.0.0.1:${pki.port}`);
      assert.equal(ocspUrlOf(pki.caDer), undefined);
      assert.throws(() => ocspUrlOf(new Uint8Array([1, 2, 3])), /does not parse/);
    });
  } finally {
    await pki.cleanup();
  }
});

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
