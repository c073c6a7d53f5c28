import assert from "node:assert/strict";
import { cidrContains, formatIp, isIp, parseCidr, parseIp, unmapIp } from "../../src/core/ip.ts";

Deno.test("parseIp() reads dotted quads into 4 bytes", () => {
  assert.deepEqual([...parseIp("192.0.2.1")!], [192, 0, 2, 1]);
  assert.deepEqual([...parseIp("0.0.0.0")!], [0, 0, 0, 0]);
  assert.deepEqual([...parseIp("255.255.255.255")!], [255, 255, 255, 255]);
  assert.deepEqual([...parseIp("[10.1.2.3]")!], [10, 1, 2, 3]);
});

Deno.test("parseIp() refuses malformed IPv4 forms", () => {
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "1.2.3.-1",
      "01.2.3.4",
      "1.2.3.4 ",
      " 1.2.3.4",
      "1..2.3",
      "1.2.3.4.",
      "a.b.c.d",
      "1.2.3.0x1",
      "1234.1.1.1",
      "1.2.3.4/8",
    ]
  ) {
    assert.equal(parseIp(bad), undefined, bad);
    assert.equal(isIp(bad), false, bad);
  }
});

Deno.test("parseIp() reads IPv6 with compression and embedded IPv4", () => {
  const loop = parseIp("::1")!;
  assert.equal(loop.length, 16);
  assert.deepEqual([...loop], [...new Array(15).fill(0), 1]);
  assert.deepEqual([...parseIp("::")!], new Array(16).fill(0));
  assert.deepEqual(
    [...parseIp("2001:db8::ff00:42:8329")!],
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0x00, 0, 0x42, 0x83, 0x29],
  );
  assert.deepEqual([...parseIp("2001:DB8:0:0:0:0:0:1")!], [...parseIp("2001:db8::1")!]);
  assert.deepEqual([...parseIp("::ffff:192.0.2.1")!].slice(10), [0xff, 0xff, 192, 0, 2, 1]);
  assert.deepEqual([...parseIp("1:2:3:4:5:6:1.2.3.4")!].slice(12), [1, 2, 3, 4]);
  assert.deepEqual([...parseIp("[IPv6-is-not-here]") ?? []], []);
  assert.ok(parseIp("fe80::"));
  assert.ok(parseIp("1::8"));
  assert.ok(parseIp("1:2:3:4:5:6:7::"));
});

Deno.test("parseIp() refuses malformed IPv6 forms", () => {
  for (
    const bad of [
      ":",
      ":::",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      ":1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7:8:",
      "12345::",
      "g::1",
      "fe80::1%eth0",
      "::1.2.3",
      "::256.1.1.1",
      "1:2:3:4:5:6:7:1.2.3.4",
      "::1.2.3.4:5",
      "1.2.3.4::",
      "1.2.3.4::1",
    ]
  ) {
    assert.equal(parseIp(bad), undefined, bad);
  }
});

Deno.test("formatIp() writes dotted quads and RFC 5952 compressed IPv6", () => {
  assert.equal(formatIp(parseIp("192.0.2.1")!), "192.0.2.1");
  assert.equal(formatIp(parseIp("2001:0DB8:0:0:0:0:0:1")!), "2001:db8::1");
  assert.equal(formatIp(parseIp("::")!), "::");
  assert.equal(formatIp(parseIp("::1")!), "::1");
  // A single zero group is not compressed; the longest run wins, the first on a tie.
  assert.equal(formatIp(parseIp("1:0:2:3:4:5:6:7")!), "1:0:2:3:4:5:6:7");
  assert.equal(formatIp(parseIp("1:0:0:2:0:0:0:3")!), "1:0:0:2::3");
  assert.equal(formatIp(parseIp("1:0:0:2:3:0:0:4")!), "1::2:3:0:0:4");
});

Deno.test("unmapIp() turns ::ffff:a.b.c.d into IPv4 bytes and leaves others alone", () => {
  assert.deepEqual([...unmapIp(parseIp("::ffff:10.0.0.1")!)], [10, 0, 0, 1]);
  assert.equal(unmapIp(parseIp("::10.0.0.1")!).length, 16);
  assert.equal(unmapIp(parseIp("::fffe:10.0.0.1")!).length, 16);
  assert.equal(unmapIp(parseIp("1::ffff:10.0.0.1")!).length, 16);
  assert.equal(unmapIp(parseIp("10.0.0.1")!).length, 4);
});

Deno.test("parseCidr() reads networks and bare addresses, refuses bad prefixes", () => {
  assert.deepEqual(parseCidr("10.0.0.0/8"), { bytes: new Uint8Array([10, 0, 0, 0]), prefix: 8 });
  assert.equal(parseCidr("10.0.0.1")!.prefix, 32);
  assert.equal(parseCidr("::1")!.prefix, 128);
  assert.equal(parseCidr("2001:db8::/32")!.prefix, 32);
  assert.equal(parseCidr("0.0.0.0/0")!.prefix, 0);
  // An IPv4-mapped network becomes an IPv4 network.
  assert.deepEqual(parseCidr("::ffff:10.0.0.0/104"), { bytes: new Uint8Array([10, 0, 0, 0]), prefix: 8 });
  for (
    const bad of [
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/",
      "10.0.0.0/-1",
      "10.0.0.0/8/8",
      "10.0.0.0/a",
      "10.0.0/8",
      "/8",
      "::ffff:10.0.0.0/64",
      "10.0.0.0/0008",
    ]
  ) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
});

Deno.test("cidrContains() matches by prefix, byte and bit boundaries", () => {
  const net = parseCidr("192.168.0.0/16")!;
  assert.equal(cidrContains(net, "192.168.255.1"), true);
  assert.equal(cidrContains(net, "192.169.0.1"), false);
  const odd = parseCidr("10.0.0.0/13")!;
  assert.equal(cidrContains(odd, "10.7.255.255"), true);
  assert.equal(cidrContains(odd, "10.8.0.0"), false);
  const host = parseCidr("10.1.2.3")!;
  assert.equal(cidrContains(host, "10.1.2.3"), true);
  assert.equal(cidrContains(host, "10.1.2.4"), false);
  assert.equal(cidrContains(parseCidr("0.0.0.0/0")!, "203.0.113.9"), true);
  assert.equal(cidrContains(parseCidr("2001:db8::/32")!, "2001:db8:ffff::1"), true);
  assert.equal(cidrContains(parseCidr("2001:db8::/33")!, "2001:db8:8000::1"), false);
  assert.equal(cidrContains(net, new Uint8Array([192, 168, 1, 1])), true);
});

Deno.test("cidrContains() matches IPv4-mapped IPv6 clients against IPv4 networks", () => {
  const loop = parseCidr("127.0.0.0/8")!;
  assert.equal(cidrContains(loop, "::ffff:127.0.0.1"), true);
  assert.equal(cidrContains(loop, "::ffff:128.0.0.1"), false);
  assert.equal(cidrContains(parseCidr("::ffff:127.0.0.0/104")!, "127.9.9.9"), true);
  // Families do not mix otherwise.
  assert.equal(cidrContains(loop, "::1"), false);
  assert.equal(cidrContains(parseCidr("::1")!, "127.0.0.1"), false);
  assert.equal(cidrContains(parseCidr("::/0")!, "127.0.0.1"), false);
});

Deno.test("cidrContains() is false for text that is not an address", () => {
  const net = parseCidr("0.0.0.0/0")!;
  assert.equal(cidrContains(net, "localhost"), false);
  assert.equal(cidrContains(net, ""), false);
  assert.equal(cidrContains(net, "1.2.3.4.5"), false);
});
