import assert from "node:assert/strict";
import {
  crc32c,
  parseProxyHeader,
  type ParseResult,
  parseSslTlv,
  PP2_TYPE,
  PROXY_V2_SIGNATURE,
  type ProxyHeader,
} from "../../src/inbound/proxy_protocol.ts";

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);

function ok(r: ParseResult): { header: ProxyHeader; length: number } {
  if (r.kind !== "ok") assert.fail(`expected ok, got ${JSON.stringify(r)}`);
  return r;
}

function invalid(r: ParseResult, match?: RegExp): void {
  if (r.kind !== "invalid") assert.fail(`expected invalid, got ${r.kind}`);
  if (match) assert.match(r.reason, match);
}

function tlv(type: number, value: Uint8Array): Uint8Array {
  return new Uint8Array([type, value.length >> 8, value.length & 0xff, ...value]);
}

/** Builds a v2 header; `block` is everything after the 16-byte fixed part. */
function v2(verCmd: number, fam: number, block: Uint8Array, declared = block.length): Uint8Array {
  return new Uint8Array([...PROXY_V2_SIGNATURE, verCmd, fam, declared >> 8, declared & 0xff, ...block]);
}

const inet4Block = new Uint8Array([192, 0, 2, 7, 10, 0, 0, 1, 0xc3, 0x50, 0x00, 0x19]); // :50000 → :25

// ---- v1 -----------------------------------------------------------------------------------------------------

Deno.test("parseProxyHeader() reads a v1 TCP4 header and reports the bytes it consumed", () => {
  const line = "PROXY TCP4 192.0.2.7 10.0.0.1 50000 25\r\n";
  const r = ok(parseProxyHeader(bytes(line + "EHLO x\r\n")));
  assert.equal(r.length, line.length);
  assert.deepEqual(r.header, {
    version: 1,
    command: "PROXY",
    family: "TCP4",
    source: { ip: "192.0.2.7", port: 50000 },
    destination: { ip: "10.0.0.1", port: 25 },
    tlvs: [],
  });
});

Deno.test("parseProxyHeader() reads a v1 TCP6 header and normalises the addresses", () => {
  const r = ok(parseProxyHeader(bytes("PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 65535 0\r\n")));
  assert.equal(r.header.family, "TCP6");
  assert.deepEqual(r.header.source, { ip: "2001:db8::1", port: 65535 });
  assert.deepEqual(r.header.destination, { ip: "::1", port: 0 });
});

Deno.test("parseProxyHeader() accepts v1 UNKNOWN with or without trailing fields and gives no addresses", () => {
  const a = ok(parseProxyHeader(bytes("PROXY UNKNOWN\r\n")));
  assert.equal(a.length, 15);
  assert.equal(a.header.family, "UNKNOWN");
  assert.equal(a.header.source, undefined);
  const worst =
    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  assert.equal(worst.length, 107);
  assert.equal(ok(parseProxyHeader(bytes(worst))).length, 107);
});

Deno.test("parseProxyHeader() says incomplete for every proper prefix of a v1 header", () => {
  const line = bytes("PROXY TCP4 192.0.2.7 10.0.0.1 50000 25\r\n");
  for (let i = 0; i < line.length; i++) {
    assert.equal(parseProxyHeader(line.subarray(0, i)).kind, "incomplete", `prefix ${i}`);
  }
});

Deno.test("parseProxyHeader() rejects a v1 line that reaches 107 bytes without CRLF", () => {
  const long = "PROXY TCP6 " + "1".repeat(120);
  invalid(parseProxyHeader(bytes(long.slice(0, 107))), /no CRLF within 107/);
  assert.equal(parseProxyHeader(bytes(long.slice(0, 106))).kind, "incomplete");
  // A CRLF at bytes 108–109 is too late even though the line is otherwise well formed.
  const tooLong = "PROXY UNKNOWN " + "x".repeat(93) + "\r\n";
  assert.equal(tooLong.length, 109);
  invalid(parseProxyHeader(bytes(tooLong)));
});

Deno.test("parseProxyHeader() rejects v1 headers with bad addresses", () => {
  for (
    const line of [
      "PROXY TCP4 1.2.3.256 10.0.0.1 1 2\r\n",
      "PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n",
      "PROXY TCP4 01.2.3.4 10.0.0.1 1 2\r\n",
      "PROXY TCP4 ::1 10.0.0.1 1 2\r\n", // v6 in TCP4
      "PROXY TCP4 [1.2.3.4] 10.0.0.1 1 2\r\n",
      "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", // v4 in TCP6
      "PROXY TCP6 ::1 [::1] 1 2\r\n",
      "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
      "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
      "PROXY TCP4 example.com 10.0.0.1 1 2\r\n",
    ]
  ) invalid(parseProxyHeader(bytes(line)), /address/);
});

Deno.test("parseProxyHeader() rejects v1 headers with bad ports", () => {
  for (const port of ["65536", "025", "+25", "-1", "", "2a", "0x19", "99999999"]) {
    invalid(parseProxyHeader(bytes(`PROXY TCP4 1.2.3.4 10.0.0.1 ${port} 25\r\n`)), port ? /port/ : undefined);
    invalid(parseProxyHeader(bytes(`PROXY TCP4 1.2.3.4 10.0.0.1 25 ${port}\r\n`)));
  }
});

Deno.test("parseProxyHeader() rejects v1 headers with wrong spacing, case, fields or line ending", () => {
  for (
    const line of [
      "PROXY  TCP4 1.2.3.4 10.0.0.1 1 2\r\n",
      "PROXY TCP4 1.2.3.4  10.0.0.1 1 2\r\n",
      "PROXY TCP4 1.2.3.4 10.0.0.1 1 2 \r\n",
      "PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n",
      "PROXY TCP4 1.2.3.4 10.0.0.1 1 2 3\r\n",
      "PROXY tcp4 1.2.3.4 10.0.0.1 1 2\r\n",
      "PROXY UDP4 1.2.3.4 10.0.0.1 1 2\r\n",
      "PROXY TCP4\r\n",
      "PROXY \r\n",
      "proxy TCP4 1.2.3.4 10.0.0.1 1 2\r\n",
      "PROXY TCP4 1.2.3.4 10.0.0.1 1 2\n",
      "PROXY TCP4 1.2.3.4\r10.0.0.1 1 2\r\n",
      "PROXY TCP4 1.2.3.4\t10.0.0.1 1 2\r\n",
      "PROXYTCP4 1.2.3.4 10.0.0.1 1 2\r\n",
    ]
  ) invalid(parseProxyHeader(bytes(line)));
});

Deno.test("parseProxyHeader() rejects plain SMTP at once instead of waiting for more", () => {
  invalid(parseProxyHeader(bytes("E")), /not a PROXY/);
  invalid(parseProxyHeader(bytes("PROXZ")), /not a PROXY/);
  invalid(parseProxyHeader(bytes("\r\n\r\n\x01")), /signature/);
});

// ---- v2 -----------------------------------------------------------------------------------------------------

Deno.test("parseProxyHeader() reads a v2 PROXY TCP4 header with TLVs and stops at the declared length", () => {
  const tlvs = [
    tlv(PP2_TYPE.ALPN, bytes("smtp")),
    tlv(PP2_TYPE.UNIQUE_ID, bytes("abc")),
    tlv(0xe0, new Uint8Array()),
  ];
  const block = new Uint8Array([...inet4Block, ...tlvs.flatMap((t) => [...t])]);
  const hdr = v2(0x21, 0x11, block);
  const r = ok(parseProxyHeader(new Uint8Array([...hdr, ...bytes("EHLO")])));
  assert.equal(r.length, hdr.length);
  assert.equal(r.header.version, 2);
  assert.equal(r.header.command, "PROXY");
  assert.equal(r.header.family, "TCP4");
  assert.deepEqual(r.header.source, { ip: "192.0.2.7", port: 50000 });
  assert.deepEqual(r.header.destination, { ip: "10.0.0.1", port: 25 });
  assert.deepEqual(
    r.header.tlvs.map((t) => [t.type, new TextDecoder().decode(t.value)]),
    [[1, "smtp"], [5, "abc"], [0xe0, ""]],
  );
});

Deno.test("parseProxyHeader() reads a v2 PROXY TCP6 header", () => {
  const src = [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 0x09];
  const dst = [...new Array(15).fill(0), 1];
  const block = new Uint8Array([...src, ...dst, 0x04, 0x00, 0x01, 0xd1]);
  const r = ok(parseProxyHeader(v2(0x21, 0x21, block)));
  assert.equal(r.header.family, "TCP6");
  assert.deepEqual(r.header.source, { ip: "2001:db8::9", port: 1024 });
  assert.deepEqual(r.header.destination, { ip: "::1", port: 465 });
  assert.deepEqual(r.header.tlvs, []);
});

Deno.test("parseProxyHeader() reads a v2 UNIX header's socket paths", () => {
  const block = new Uint8Array(216);
  block.set(bytes("/run/a.sock"), 0);
  block.set(bytes("/run/b.sock"), 108);
  const r = ok(parseProxyHeader(v2(0x21, 0x31, block)));
  assert.equal(r.header.family, "UNIX");
  assert.deepEqual(r.header.unix, { source: "/run/a.sock", destination: "/run/b.sock" });
  assert.equal(r.header.source, undefined);
});

Deno.test("parseProxyHeader() accepts v2 LOCAL and ignores its address block", () => {
  const bare = ok(parseProxyHeader(v2(0x20, 0x00, new Uint8Array())));
  assert.equal(bare.length, 16);
  assert.deepEqual(bare.header, { version: 2, command: "LOCAL", family: "UNKNOWN", tlvs: [] });
  // HAProxy may put addresses and even a datagram family in a LOCAL header: still only a health check.
  const withAddr = ok(parseProxyHeader(v2(0x20, 0x12, inet4Block)));
  assert.equal(withAddr.header.command, "LOCAL");
  assert.equal(withAddr.header.source, undefined);
  assert.equal(withAddr.length, 28);
});

Deno.test("parseProxyHeader() accepts v2 PROXY with UNSPEC family as addressless", () => {
  const r = ok(parseProxyHeader(v2(0x21, 0x00, tlv(PP2_TYPE.NOOP, new Uint8Array(3)))));
  assert.equal(r.header.family, "UNKNOWN");
  assert.equal(r.header.source, undefined);
  assert.equal(r.header.tlvs.length, 1);
});

Deno.test("parseProxyHeader() says incomplete for every proper prefix of a v2 header", () => {
  const hdr = v2(0x21, 0x11, new Uint8Array([...inet4Block, ...tlv(1, bytes("h2"))]));
  for (let i = 0; i < hdr.length; i++) {
    assert.equal(parseProxyHeader(hdr.subarray(0, i)).kind, "incomplete", `prefix ${i}`);
  }
});

Deno.test("parseProxyHeader() rejects a bad v2 signature, version, command or family byte", () => {
  const good = v2(0x21, 0x11, inet4Block);
  const bad = (at: number, value: number) => {
    const b = good.slice();
    b[at] = value;
    return parseProxyHeader(b);
  };
  invalid(bad(7, 0x52), /signature/);
  invalid(bad(11, 0x0d), /signature/);
  invalid(bad(12, 0x11), /version 1/);
  invalid(bad(12, 0x31), /version 3/);
  invalid(bad(12, 0x22), /command/);
  invalid(bad(13, 0x13), /family/);
  invalid(bad(13, 0x41), /family/);
  invalid(bad(13, 0x12), /datagram/);
  invalid(bad(13, 0x22), /datagram/);
  // The version nibble is judged as soon as byte 13 arrives.
  const early = good.slice(0, 13);
  early[12] = 0x11;
  invalid(parseProxyHeader(early), /version/);
});

Deno.test("parseProxyHeader() rejects a v2 length over the cap before the body arrives", () => {
  const fixed = v2(0x21, 0x11, new Uint8Array(), 2000);
  invalid(parseProxyHeader(fixed), /exceeds the limit of 1536/);
  invalid(parseProxyHeader(v2(0x21, 0x11, new Uint8Array(), 0xffff)), /exceeds/);
  // The cap is configurable and counts the 16 fixed bytes.
  const block = new Uint8Array([...inet4Block, ...tlv(4, new Uint8Array(100))]);
  invalid(parseProxyHeader(v2(0x21, 0x11, block), { maxLength: 16 + block.length - 1 }), /exceeds/);
  ok(parseProxyHeader(v2(0x21, 0x11, block), { maxLength: 16 + block.length }));
});

Deno.test("parseProxyHeader() rejects v2 headers too short for their address family", () => {
  invalid(parseProxyHeader(v2(0x21, 0x11, inet4Block.subarray(0, 11))), /too short/);
  invalid(parseProxyHeader(v2(0x21, 0x21, new Uint8Array(35))), /too short/);
  invalid(parseProxyHeader(v2(0x21, 0x31, new Uint8Array(215))), /too short/);
});

Deno.test("parseProxyHeader() rejects a TLV that overruns the header, even when bytes follow it", () => {
  const t = tlv(PP2_TYPE.AUTHORITY, bytes("mx.example"));
  const block = new Uint8Array([...inet4Block, ...t]);
  // Declared length cuts the TLV short; the rest of the TLV sits after the header in the buffer.
  const hdr = v2(0x21, 0x11, block, block.length - 3);
  invalid(parseProxyHeader(hdr), /runs past the end/);
  // One or two stray bytes cannot hold a TLV header.
  invalid(parseProxyHeader(v2(0x21, 0x11, new Uint8Array([...inet4Block, 1, 0]))), /inside a TLV header/);
});

Deno.test("parseProxyHeader() checks nested SSL sub-TLVs", () => {
  const good = new Uint8Array([0x01, 0, 0, 0, 0, ...tlv(0x21, bytes("TLSv1.3")), ...tlv(0x23, bytes("X"))]);
  const r = ok(parseProxyHeader(v2(0x21, 0x11, new Uint8Array([...inet4Block, ...tlv(PP2_TYPE.SSL, good)]))));
  const ssl = parseSslTlv(r.header.tlvs[0].value);
  assert.equal(ssl?.client, 1);
  assert.equal(ssl?.verify, 0);
  assert.deepEqual(ssl?.tlvs.map((t) => t.type), [0x21, 0x23]);

  const overrun = good.slice();
  overrun[7] = 50; // the VERSION sub-TLV claims 50 bytes
  invalid(
    parseProxyHeader(v2(0x21, 0x11, new Uint8Array([...inet4Block, ...tlv(PP2_TYPE.SSL, overrun)]))),
    /SSL/,
  );
  invalid(
    parseProxyHeader(
      v2(0x21, 0x11, new Uint8Array([...inet4Block, ...tlv(PP2_TYPE.SSL, new Uint8Array(4))])),
    ),
  );
});

Deno.test("parseProxyHeader() verifies a CRC32C TLV", () => {
  assert.equal(crc32c(bytes("123456789")), 0xe3069283); // the standard CRC-32C check value
  const block = new Uint8Array([...inet4Block, ...tlv(PP2_TYPE.CRC32C, new Uint8Array(4))]);
  const hdr = v2(0x21, 0x11, block);
  const sum = crc32c(hdr);
  hdr.set([sum >>> 24, (sum >>> 16) & 0xff, (sum >>> 8) & 0xff, sum & 0xff], hdr.length - 4);
  ok(parseProxyHeader(hdr));
  const tampered = hdr.slice();
  tampered[16] ^= 1; // another source address
  invalid(parseProxyHeader(tampered), /CRC32C/);
  invalid(
    parseProxyHeader(
      v2(0x21, 0x11, new Uint8Array([...inet4Block, ...tlv(PP2_TYPE.CRC32C, new Uint8Array(3))])),
    ),
  );
});
