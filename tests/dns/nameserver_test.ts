import { assertEquals } from "./_assert.ts";
import { isLoopback, trustsAd } from "../../src/dns/nameserver.ts";
import { parseResolvConf } from "../../src/dns/resolv_conf.ts";
import { reverseName } from "../../src/dns/reverse_name.ts";

Deno.test("isLoopback() accepts 127.0.0.0/8 and ::1 only", () => {
  for (const a of ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.53", "0:0:0:0:0:0:0:1"]) {
    assertEquals(isLoopback(a), true, a);
  }
  for (const a of ["128.0.0.1", "10.0.0.1", "::2", "::", "1::1", "localhost", "", "127.0.0.256"]) {
    assertEquals(isLoopback(a), false, a);
  }
});

Deno.test("trustsAd() keeps AD from loopback or trusted resolvers, and obeys never/always", () => {
  assertEquals(trustsAd({ address: "127.0.0.53" }), true);
  assertEquals(trustsAd({ address: "192.0.2.53" }), false);
  assertEquals(trustsAd({ address: "192.0.2.53", trusted: true }), true);
  assertEquals(trustsAd({ address: "192.0.2.53" }, "always"), true);
  assertEquals(trustsAd({ address: "127.0.0.1", trusted: true }, "never"), false);
});

Deno.test("parseResolvConf() reads nameservers and options, skipping junk, defaulting to 127.0.0.1", () => {
  const conf = parseResolvConf([
    "# comment",
    "search example.com",
    "nameserver 192.0.2.1 ; trailing",
    "nameserver not-an-ip",
    "nameserver 2001:db8::53",
    "nameserver fe80::1%eth0",
    "options ndots:2 timeout:3 attempts:9 rotate",
  ].join("\n"));
  assertEquals(conf, {
    nameservers: [{ address: "192.0.2.1" }, { address: "2001:db8::53" }],
    timeout: 3000,
    attempts: 5,
    rotate: true,
  });
  assertEquals(parseResolvConf("options timeout:0 attempts:x"), {
    nameservers: [{ address: "127.0.0.1" }],
    rotate: false,
  });
});

Deno.test("reverseName() builds in-addr.arpa and nibble ip6.arpa names", () => {
  assertEquals(reverseName("192.0.2.7"), "7.2.0.192.in-addr.arpa");
  assertEquals(reverseName("::ffff:192.0.2.7"), "7.2.0.192.in-addr.arpa");
  assertEquals(
    reverseName("2001:db8::1"),
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
  );
  assertEquals(reverseName("mail.example"), undefined);
  assertEquals(reverseName("1.2.3"), undefined);
});
