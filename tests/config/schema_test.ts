import assert from "node:assert/strict";
import { ConfigError, formatPath, validateConfig } from "../../src/config/load.ts";
import { ratelimit } from "../../src/policy/checks/ratelimit.ts";
import { redisSet } from "../../src/policy/redis_lookup.ts";

/** Validates and returns the problem lines (fails the test when the config is accepted). */
function problems(input: unknown): string[] {
  try {
    validateConfig(input);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    assert.equal(err.message, err.problems.join("\n"));
    return err.problems;
  }
  assert.fail(`config was accepted: ${JSON.stringify(input)}`);
}

/** Asserts exactly one problem line and that it starts with `path: `. */
function onlyProblemAt(input: unknown, path: string, detail?: RegExp): string {
  const lines = problems(input);
  assert.equal(lines.length, 1, `expected one problem, got ${JSON.stringify(lines)}`);
  assert.ok(lines[0].startsWith(`${path}: `), `"${lines[0]}" should start with "${path}: "`);
  if (detail) assert.match(lines[0].slice(path.length + 2), detail);
  return lines[0];
}

Deno.test("validateConfig() fills defaults for an empty config", () => {
  for (const input of [{}, undefined, null]) {
    const c = validateConfig(input);
    assert.deepEqual(c.listen, [{ address: "127.0.0.1", port: 2525, mode: "smtp", submission: false }]);
    assert.equal(c.spool.dir, "./var/spool");
    assert.deepEqual(c.relay.clients, ["127.0.0.0/8", "::1"]);
    assert.deepEqual(c.relay.domains, []);
    assert.equal(c.limits.commandLine, 512);
    assert.equal(c.limits.messageSize, 50 * 1024 * 1024);
    assert.equal(c.limits.dataMemory, 512 * 1024 * 1024);
    assert.equal(c.limits.commandTimeout, 300_000);
    assert.equal(c.limits.greetingDelay, 0);
    assert.equal(c.smtp.bareLineEndings, "reject");
    assert.equal(c.prdr.enable, false);
    assert.deepEqual(c.policy.rcpt, []);
    assert.equal(c.routes.length, 1);
    assert.equal(c.routes[0].mx, true);
  }
});

Deno.test("validateConfig() turns durations and sizes into numbers and keeps functions", () => {
  const step = () => {};
  const c = validateConfig({
    listen: [{ port: 0 }, { address: "::1", port: 465, mode: "smtps" }],
    tls: { certificates: [{ cert: "cert.pem", key: "key.pem" }] },
    limits: { messageSize: "10MB", commandTimeout: "1m30s", greetingDelay: 250 },
    relay: { domains: "example.test, *.example.test", clients: () => true },
    policy: { rcpt: [step] },
  });
  assert.equal(c.limits.messageSize, 10 * 1024 * 1024);
  assert.equal(c.limits.commandTimeout, 90_000);
  assert.equal(c.limits.greetingDelay, 250);
  assert.equal(c.listen[0].address, "127.0.0.1");
  assert.equal(c.listen[1].mode, "smtps");
  assert.equal(c.policy.rcpt[0], step);
  assert.equal(typeof c.relay.clients, "function");
});

Deno.test("validateConfig() names the listener index of a bad port", () => {
  onlyProblemAt({ listen: [{ port: 25 }, { port: 70000 }] }, "listen[1].port", /0–65535/);
  onlyProblemAt({ listen: [{ port: 25 }, { port: "25" }] }, "listen[1].port");
  onlyProblemAt({ listen: [{ port: 2.5 }] }, "listen[0].port");
  onlyProblemAt({ listen: [{ port: -1 }] }, "listen[0].port");
  onlyProblemAt({ listen: [{ port: 25, address: "localhost" }] }, "listen[0].address", /IP address/);
  onlyProblemAt({ listen: [{ port: 25, mode: "lmtp" }] }, "listen[0].mode");
  onlyProblemAt({ listen: [] }, "listen", /at least one/);
});

Deno.test("validateConfig() reports bad sizes and durations with the value given", () => {
  onlyProblemAt({ limits: { messageSize: "lots" } }, "limits.messageSize", /size.*"lots"/);
  onlyProblemAt({ limits: { messageSize: -5 } }, "limits.messageSize");
  // More than SQLite can store in one blob: a config error naming the field, not a failing store later.
  onlyProblemAt({ limits: { messageSize: "2GB" } }, "limits.messageSize", /at most "900MB".*SQLite/);
  assert.equal(validateConfig({ limits: { messageSize: "900MB" } }).limits.messageSize, 900 * 1024 * 1024);
  // limits.dataMemory: room for two of the largest messages unless given; never less than one.
  assert.equal(validateConfig({ limits: { messageSize: "900MB" } }).limits.dataMemory, 1800 * 1024 * 1024);
  assert.equal(validateConfig({ limits: { dataMemory: "1GB" } }).limits.dataMemory, 1024 * 1024 * 1024);
  onlyProblemAt({ limits: { dataMemory: "10MB" } }, "limits.dataMemory", /at least limits.messageSize/);
  onlyProblemAt({ limits: { dataMemory: "plenty" } }, "limits.dataMemory", /size.*"plenty"/);
  onlyProblemAt(
    { limits: { commandTimeout: "5 minutes" } },
    "limits.commandTimeout",
    /duration.*"5 minutes"/,
  );
  onlyProblemAt({ delivery: { retryEvery: "1h" } }, "delivery.retryEvery", /unknown option/);
  onlyProblemAt(
    { retry: [{ domains: "*", rules: [{ every: "15x", until: "2h" }] }] },
    "retry[0].rules[0].every",
  );
  onlyProblemAt({ limits: { commandLine: 100 } }, "limits.commandLine");
});

Deno.test("validateConfig() reports host list items it cannot understand under their path", () => {
  onlyProblemAt(
    { relay: { clients: ["10.0.0.0/33"] } },
    "relay.clients",
    /invalid address or network "10.0.0.0\/33"/,
  );
  onlyProblemAt({ relay: { domains: "*.ok.test *example.test" } }, "relay.domains", /invalid host name/);
  onlyProblemAt({ smtp: { pipeliningAdvertiseHosts: "!300.0.0.1" } }, "smtp.pipeliningAdvertiseHosts");
  onlyProblemAt({ relay: { clients: 5 } }, "relay.clients");
  // Two bad items in one list give two lines, same path.
  const lines = problems({ relay: { clients: "10.0.0.0/33 ::1 bad$name" } });
  assert.equal(lines.length, 2);
  assert.ok(lines.every((l) => l.startsWith("relay.clients: ")));
});

Deno.test("validateConfig() reports every unknown key, nested or not", () => {
  const lines = problems({ bogus: 1, smtp: { banner: "x", colour: "red" }, limits: { messageSise: "1MB" } });
  assert.deepEqual(lines.sort(), [
    "bogus: unknown option",
    "limits.messageSise: unknown option",
    "smtp.colour: unknown option",
  ]);
  onlyProblemAt({ listen: [{ port: 25, host: "x" }] }, "listen[0].host", /unknown option/);
});

Deno.test("validateConfig() wants functions in policy chains and events", () => {
  onlyProblemAt({ policy: { rcpt: [() => {}, "nope"] } }, "policy.rcpt[1]", /function/);
  onlyProblemAt({ policy: { mail: "notalist" } }, "policy.mail");
  onlyProblemAt({ policy: { quit: [] } }, "policy.quit", /unknown option/);
  onlyProblemAt({ events: { "msg:delivery": 1 } }, "events.msg:delivery", /function/);
  onlyProblemAt({ events: { "msg:delivered": () => {} } }, "events.msg:delivered", /unknown event/);
});

Deno.test("validateConfig() checks TLS certificate sets", () => {
  onlyProblemAt({ tls: { certificates: [{ cert: "/a.pem" }] } }, "tls.certificates[0].key");
  onlyProblemAt({ tls: { certificates: [{ cert: "a", key: "" }] } }, "tls.certificates[0].key");
  onlyProblemAt(
    { tls: { certificates: [{ cert: "a", key: "b" }, { cert: "c", key: "d", ocsp: {} }] } },
    "tls.certificates[1].ocsp",
    /ocsp needs/,
  );
  onlyProblemAt({ tls: { protocols: ["SSLv3"] } }, "tls.protocols[0]");
});

Deno.test("validateConfig() checks routes, hostname and banner", () => {
  onlyProblemAt({ routes: [{ domains: "*" }] }, "routes[0]", /hosts or mx/);
  onlyProblemAt({ routes: [{ domains: "*", mx: true, hosts: ["a"] }] }, "routes[0]");
  onlyProblemAt({ hostname: "bad host" }, "hostname", /host name/);
  onlyProblemAt({ smtp: { banner: "two\r\nlines" } }, "smtp.banner", /one line/);
  onlyProblemAt({ smtp: { bareLineEndings: "fix" } }, "smtp.bareLineEndings");
});

Deno.test("validateConfig() lists several problems, one line each, each naming its path", () => {
  const lines = problems({
    listen: [{ port: 25 }, { port: 99999 }],
    limits: { messageSize: "big", dataTimeout: "soon" },
    relay: { clients: ["1.2.3.4/40"] },
    unknownThing: true,
    policy: { rcpt: [42] },
    tls: { certificates: [{ cert: "c.pem" }] },
  });
  const prefixes = [
    "listen[1].port: ",
    "limits.messageSize: ",
    "limits.dataTimeout: ",
    "relay.clients: invalid ",
    "unknownThing: unknown option",
    "policy.rcpt[0]: ",
    "tls.certificates[0].key: ",
  ];
  assert.equal(lines.length, prefixes.length, JSON.stringify(lines));
  for (const p of prefixes) {
    assert.equal(
      lines.filter((l) => l.startsWith(p)).length,
      1,
      `one line starting "${p}" in ${JSON.stringify(lines)}`,
    );
  }
  for (const l of lines) assert.doesNotMatch(l, /\n/);
});

Deno.test("validateConfig() refuses a config that is not an object", () => {
  onlyProblemAt("string", "(config)");
  onlyProblemAt([1], "(config)");
});

Deno.test("formatPath() writes dotted keys and bracketed indexes", () => {
  assert.equal(formatPath(["listen", 1, "port"]), "listen[1].port");
  assert.equal(formatPath(["a", "b", 0, 2, "c"]), "a.b[0][2].c");
  assert.equal(formatPath([]), "(config)");
  assert.equal(formatPath([0, "x"]), "[0].x");
});

Deno.test("validateConfig() names what the runtime would otherwise ignore or trip on", () => {
  const cases: [unknown, RegExp][] = [
    [
      { events: { "msg:recieved": () => {} } },
      /^events\.msg:recieved: unknown event \(known: msg:received, /,
    ],
    [{ tls: { requestClientCert: true } }, /^tls: requestClientCert and clientCa go together/],
    [{ tls: { clientCa: "ca.pem" } }, /^tls: requestClientCert and clientCa go together/],
    [
      { retry: [{ domains: "*", rules: [{ every: "0s", until: "1h" }] }] },
      /^retry\[0\]\.rules\[0\]\.every: /,
    ],
    [
      { retry: [{ domains: "*", rules: [{ every: "1m", until: "1h" }, { every: "1m", until: "30m" }] }] },
      /^retry\[0\]\.rules\[1\]\.until: must be later than the rule before$/,
    ],
    [
      { routes: [{ name: "a", domains: "*", mx: true }, { name: "a", domains: "x.test", mx: true }] },
      /^routes\[1\]\.name: duplicate route name "a"$/,
    ],
  ];
  for (const [input, expected] of cases) {
    assert.throws(
      () => validateConfig(input),
      (e: unknown) => e instanceof ConfigError && expected.test(e.problems[0]),
    );
  }
});

Deno.test("validateConfig() refuses an smtps listener without certificates", () => {
  onlyProblemAt(
    { listen: [{ port: 465, mode: "smtps" }] },
    "listen[0].mode",
    /smtps needs tls\.certificates/,
  );
});

Deno.test("validateConfig() checks routes[].tlsVerifyNames: names, IP addresses or *.suffix patterns", () => {
  const ok = validateConfig({
    routes: [{
      domains: "*",
      mx: true,
      tlsVerifyNames: ["mx.partner.example", "*.partner.example", "192.0.2.1"],
    }],
  });
  assert.deepEqual(ok.routes[0].tlsVerifyNames, ["mx.partner.example", "*.partner.example", "192.0.2.1"]);
  onlyProblemAt(
    { routes: [{ domains: "*", mx: true, tlsVerifyNames: ["mx.partner.example", "*.com"] }] },
    "routes[0].tlsVerifyNames[1]",
    /expected a host name, an IP address or "\*\.domain" with two labels at least, got "\*\.com"/,
  );
  onlyProblemAt(
    { routes: [{ domains: "*", mx: true, tlsVerifyNames: ["mx*.x.test"] }] },
    "routes[0].tlsVerifyNames[0]",
  );
  onlyProblemAt({ routes: [{ domains: "*", mx: true, tlsVerifyNames: [] }] }, "routes[0].tlsVerifyNames");
});

Deno.test('validateConfig() accepts event handlers for names, prefixes and "*", globally and per route; not unknown keys', () => {
  const h = () => {};
  const ok = validateConfig({
    events: { "*": h, "msg": h, "msg:host": h, "tls:cert": h },
    routes: [{ domains: "*", mx: true, events: { "tcp": h } }],
  });
  assert.equal(typeof ok.events["msg:host"], "function");
  assert.equal(typeof ok.routes[0].events?.tcp, "function");
  onlyProblemAt(
    { events: { "msg:hst": h } },
    "events.msg:hst",
    /^unknown event \(known: .*; prefixes: \*, msg, msg:host/,
  );
  onlyProblemAt(
    { routes: [{ domains: "*", mx: true, events: { "ms": h } }] },
    "routes[0].events.ms",
    /^unknown event/,
  );
});

Deno.test("validateConfig() wants srs.routes and arc.routes to name routes (given names or mx0/route1)", () => {
  const routes = [{ name: "out", domains: "*", mx: true }, {
    domains: ["corp.example"],
    hosts: ["192.0.2.1"],
  }];
  const ok = validateConfig({
    routes,
    srs: { domain: "srs.example", secrets: ["s"], routes: ["out", "route1"] },
  });
  assert.deepEqual(ok.srs?.routes, ["out", "route1"]);
  assert.deepEqual(validateConfig({ arc: { routes: ["mx0"] } }).arc.routes, ["mx0"]);
  onlyProblemAt(
    { routes, srs: { domain: "srs.example", secrets: ["s"], routes: ["out", "outt"] } },
    "srs.routes[1]",
    /^no route is named "outt"$/,
  );
  onlyProblemAt({ routes, arc: { routes: ["mx0"] } }, "arc.routes[0]", /^no route is named "mx0"$/);
});

Deno.test('validateConfig() refuses ratelimit store "redis" and Redis lookup host lists without redis, naming the path', () => {
  const redisLimit = () => ratelimit({ limit: 10, period: "1h", per: "mail", store: "redis" });
  onlyProblemAt(
    { checks: [ratelimit({ limit: 5, period: "1m", per: "conn" }), redisLimit()] },
    "checks[1]",
    /^ratelimit store "redis" needs redis to be configured \(redis\.servers\)$/,
  );
  onlyProblemAt(
    { relay: { domains: redisSet("relay_domains").hostList("name") } },
    "relay.domains",
    /^a Redis lookup needs redis to be configured \(redis\.servers\)$/,
  );
  assert.deepEqual(
    problems({
      checks: [redisLimit()],
      delivery: { hostsTryDane: redisSet("dane_hosts").hostList("name") },
      routes: [{ domains: "*", mx: true, hostsRequireTls: redisSet("tls_hosts").hostList() }],
    }).sort(),
    [
      'checks[0]: ratelimit store "redis" needs redis to be configured (redis.servers)',
      "delivery.hostsTryDane: a Redis lookup needs redis to be configured (redis.servers)",
      "routes[0].hostsRequireTls: a Redis lookup needs redis to be configured (redis.servers)",
    ],
  );
  // With redis configured, the same config loads; without it, the default and "memory" stores need nothing.
  const redis = { servers: [{ url: "redis://127.0.0.1:6379" }] };
  const ok = validateConfig({
    redis,
    checks: [redisLimit()],
    relay: { domains: redisSet("relay_domains").hostList("name") },
  });
  assert.equal(ok.checks.length, 1);
  assert.equal(
    validateConfig({
      checks: [
        ratelimit({ limit: 10, period: "1h", per: "mail" }),
        ratelimit({ limit: 10, period: "1h", per: "rcpt", store: "memory" }),
      ],
    }).checks.length,
    2,
  );
});

Deno.test('a duration Ferry waits with a timer is at most 2^31-1 ms: "30d" is a config error naming the field', () => {
  // Deno fires a longer setTimeout after 1 ms: tls.handshakeTimeout "30d" timed out every handshake at once.
  const cases: [Record<string, unknown>, string][] = [
    [{ tls: { handshakeTimeout: "30d" } }, "tls.handshakeTimeout"],
    [{ limits: { commandTimeout: "1000d" } }, "limits.commandTimeout"],
    [{ limits: { shutdownGrace: 2 ** 31 } }, "limits.shutdownGrace"],
    [{ proxyTimeout: "25d" }, "proxyTimeout"],
    [{ delivery: { idleTimeout: "4w" } }, "delivery.idleTimeout"],
    [{ dns: { timeout: "52w" } }, "dns.timeout"],
    [{ dmarc: { reports: { interval: "30d" } } }, "dmarc.reports.interval"],
  ];
  for (const [input, path] of cases) onlyProblemAt(input, path, /at most 2147483647 ms \("24d" fits\)/);
  // The longest that fits is accepted, and durations that are not timers (retry rules) may be longer.
  const c = validateConfig({
    tls: { handshakeTimeout: "24d" },
    limits: { commandTimeout: 2 ** 31 - 1 },
    retry: [{ domains: "*", rules: [{ every: "1d", until: "60d" }] }],
  });
  assert.equal(c.tls.handshakeTimeout, 24 * 86_400_000);
  assert.equal(c.limits.commandTimeout, 2 ** 31 - 1);
});

Deno.test("validateConfig() refuses route hosts that routing could never use, naming the host", () => {
  onlyProblemAt(
    { routes: [{ domains: "*", hosts: ["mx1.example", "[300.1.1.1]:25"] }] },
    "routes[0].hosts[1]",
    /"\[300\.1\.1\.1\]:25": not an IP address/,
  );
  onlyProblemAt(
    { routes: [{ domains: "*", hosts: ["[127.0.0.1]:99999"] }] },
    "routes[0].hosts[0]",
    /1–65535/,
  );
  onlyProblemAt({ routes: [{ domains: "*", hosts: ["mx.example:0"] }] }, "routes[0].hosts[0]", /1–65535/);
  onlyProblemAt({ routes: [{ domains: "*", hosts: ["mx example"] }] }, "routes[0].hosts[0]", /host name/);
  const hosts = ["mx1.corp:2525", "[192.0.2.5]:25", "[::1]:2525", "::1", "192.0.2.7", "[192.0.2.8]", "mx."];
  assert.deepEqual(validateConfig({ routes: [{ domains: "*", hosts }] }).routes[0].hosts, hosts);
});
