import assert from "node:assert/strict";
import { canonicalHostname, checkHostname, matchesPresented } from "../../src/tls/hostname.ts";

Deno.test("checkHostname() matches DNS SANs case-insensitively and ignores a trailing dot", () => {
  const names = { dns: ["MX.Example.com", "mx2.example.com."], cn: ["ignored.example"] };
  assert.equal(checkHostname(names, ["mx.example.COM."]), true);
  assert.equal(checkHostname(names, ["mx2.example.com"]), true);
  assert.equal(checkHostname(names, ["mx3.example.com"]), false);
});

Deno.test("checkHostname() uses the CN only when there is no DNS SAN", () => {
  assert.equal(checkHostname({ dns: ["a.example"], cn: ["b.example"] }, ["b.example"]), false);
  assert.equal(checkHostname({ dns: [], cn: ["b.example"] }, ["b.example"]), true);
  assert.equal(checkHostname({ dns: [], cn: [] }, ["b.example"]), false);
});

Deno.test("a wildcard covers exactly one whole left-most label", () => {
  assert.equal(matchesPresented("*.example.com", "mx.example.com"), true);
  assert.equal(matchesPresented("*.Example.com.", "mx.example.com"), true);
  assert.equal(matchesPresented("*.example.com", "a.b.example.com"), false);
  assert.equal(matchesPresented("*.example.com", "example.com"), false);
});

Deno.test("bad wildcards never match: partial labels, *.tld, several stars, non-left-most", () => {
  assert.equal(matchesPresented("f*.example.com", "foo.example.com"), false);
  assert.equal(matchesPresented("*oo.example.com", "foo.example.com"), false);
  assert.equal(matchesPresented("*.com", "example.com"), false);
  assert.equal(matchesPresented("*.*.example.com", "a.b.example.com"), false);
  assert.equal(matchesPresented("mx.*.example.com", "mx.a.example.com"), false);
  assert.equal(matchesPresented("*", "localhost"), false);
});

Deno.test("IDNA: U-label reference names are compared as A-labels; U-labels in certificates never match", () => {
  assert.equal(canonicalHostname("Bücher.example"), "xn--bcher-kva.example");
  assert.equal(checkHostname({ dns: ["xn--bcher-kva.example"], cn: [] }, ["bücher.example"]), true);
  assert.equal(checkHostname({ dns: ["*.xn--bcher-kva.example"], cn: [] }, ["mx.BÜCHER.example."]), true);
  assert.equal(checkHostname({ dns: ["bücher.example"], cn: [] }, ["bücher.example"]), false);
});

Deno.test("canonicalHostname() refuses what is not a host name", () => {
  for (const bad of ["", ".", "a..b", "*.example.com", "a b.example", "user@example.com", "ex:25", "a/b"]) {
    assert.equal(canonicalHostname(bad), undefined, bad);
  }
  assert.equal(canonicalHostname("MX.Example.com."), "mx.example.com");
  assert.equal(checkHostname({ dns: ["a..b"], cn: [] }, ["a..b"]), false);
});

Deno.test("checkHostname() matches an IP reference only against iPAddress SANs, never DNS names or CNs", () => {
  const names = {
    dns: ["127.0.0.1", "mx.example.test"],
    cn: ["127.0.0.1"],
    ip: ["127.0.0.1", "2001:db8:0:0:0:0:0:1"],
  };
  assert.equal(checkHostname(names, ["127.0.0.1"]), true);
  assert.equal(checkHostname(names, ["[2001:db8::1]"]), true);
  assert.equal(checkHostname({ ...names, ip: [] }, ["127.0.0.1"]), false);
  assert.equal(checkHostname(names, ["127.0.0.2"]), false);
  assert.equal(checkHostname(names, ["mx.example.test"]), true);
});

Deno.test("checkHostname() accepts a *.suffix pattern as an acceptable name: one label below it, or the same wildcard", () => {
  const accept = ["*.partner.example"];
  assert.equal(checkHostname({ dns: ["mx1.partner.example"], cn: [] }, accept), true);
  assert.equal(checkHostname({ dns: ["MX2.Partner.Example."], cn: [] }, accept), true);
  assert.equal(checkHostname({ dns: ["*.partner.example"], cn: [] }, accept), true, "the same wildcard");
  // RFC 6125: one label only, and not the suffix itself.
  assert.equal(checkHostname({ dns: ["a.b.partner.example"], cn: [] }, accept), false);
  assert.equal(checkHostname({ dns: ["partner.example"], cn: [] }, accept), false);
  assert.equal(checkHostname({ dns: ["mx.partner.example.evil.test"], cn: [] }, accept), false);
  assert.equal(
    checkHostname({ dns: ["*.example"], cn: [] }, accept),
    false,
    "a wider wildcard is not enough",
  );
  assert.equal(checkHostname({ dns: ["mx*.partner.example"], cn: [] }, accept), false);
  // CN only when there is no DNS-ID.
  assert.equal(checkHostname({ dns: [], cn: ["mx.partner.example"] }, accept), true);
  assert.equal(checkHostname({ dns: ["other.test"], cn: ["mx.partner.example"] }, accept), false);
  // A pattern never widens to a public suffix.
  assert.equal(checkHostname({ dns: ["anything.com"], cn: [] }, ["*.com"]), false);
});
