/**
 * The configuration schema: every static field validated by Zod, functions checked to be functions.
 * Durations and sizes are strings ("3s", "50MB"); host lists follow src/core/host_list.ts.
 */

import { z } from "zod";
import { HostList, type HostListFn, type HostListSpec, parseHostListItem } from "../core/host_list.ts";
import type { AuthCheckRequest } from "../core/envelope.ts";
import { MAX_TIMER_MS, parseDuration, parseSize, TIMER_LIMIT_TEXT } from "../core/units.ts";
import { EVENT_KEYS } from "../core/event_names.ts";
import { parseScryptHash } from "../core/password_hash.ts";
import { parseAdminListen } from "../core/listen_address.ts";
import { findRedisNeeds } from "../core/needs_redis.ts";
import { routeName } from "../core/route_name.ts";
import { isIp } from "../core/ip.ts";

const fn = z.custom<(...args: never[]) => unknown>((v) => typeof v === "function", {
  error: "expected a function",
});

/** A function of a known signature, so config.ts gets its parameters typed (checked to be a function). */
const fnOf = <F extends (...args: never[]) => unknown>() =>
  z.custom<F>((v) => typeof v === "function", { error: "expected a function" });

/** A host list: "*", CIDRs, names, "*.suffix", "!negation", as a string, an array, or a function. */
export const hostList = z.union([z.string(), z.array(z.string()), fnOf<HostListFn>()]).superRefine(
  (v, ctx) => {
    for (const problem of HostList.problems(v as HostListSpec)) {
      ctx.addIssue({ code: "custom", message: problem });
    }
  },
).transform((v) => v as HostListSpec);

/** A duration string, turned into milliseconds. */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch {
    ctx.addIssue({
      code: "custom",
      message: `expected a duration like "30s" or "5m", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
});

/**
 * A duration Ferry waits with a timer (a deadline, a timeout, an interval): at most {@link MAX_TIMER_MS}. Deno
 * turns a longer setTimeout into one of 1 ms, so "30d" would be a deadline that has always passed.
 */
export const timerDuration = duration.refine((ms) => ms <= MAX_TIMER_MS, {
  error: TIMER_LIMIT_TEXT,
});

/** `limits.dataMemory` unless the message size asks for more (512 MiB). */
export const DATA_MEMORY_DEFAULT = 512 * 1024 * 1024;

/** The largest `limits.messageSize` the spool can store (900 MiB). */
export const MAX_MESSAGE_SIZE = 900 * 1024 * 1024;

/** A size string, turned into octets. */
export const size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseSize(v);
  } catch {
    ctx.addIssue({ code: "custom", message: `expected a size like "10MB", got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
});

// Port 0 asks the OS for a free port (tests, ephemeral instances).
const port = z.number({ error: "expected a number 0–65535" }).int({ error: "expected a number 0–65535" })
  .min(0, { error: "expected a number 0–65535" }).max(65535, { error: "expected a number 0–65535" });

const ipAddress = z.string().refine((s) => /^[0-9.]+$|:/.test(s) && HostList.problems([s]).length === 0, {
  error: "expected an IP address",
});

/** One certificate set for the TLS server. */
export const certificateSet = z.object({
  cert: z.string({ error: "expected the path of a PEM certificate file" }).min(1),
  key: z.string({ error: "expected the path of a PEM private key file" }).min(1),
  serverNames: z.array(z.string()).optional(),
  ocsp: z.object({
    file: z.string().optional(),
    fetch: z.boolean().default(false),
  }).strict().refine((o) => o.file !== undefined || o.fetch, {
    error: "ocsp needs a file, fetch: true, or both",
  })
    .optional(),
}).strict();

const listener = z.object({
  address: ipAddress.default("127.0.0.1"),
  port: port,
  mode: z.enum(["smtp", "smtps"]).default("smtp"),
  /** Submission role (port 587 style): MAIL needs AUTH first */
  submission: z.boolean().default(false),
}).strict();

/** SMTP AUTH (RFC 4954) for clients: credentials, failure limits, sender binding. */
const authSection = z.object({
  mechanisms: z.array(z.enum(["PLAIN", "LOGIN"])).min(1).default(["PLAIN", "LOGIN"]),
  users: z.record(
    z.string().min(1),
    z.string().refine((h) => parseScryptHash(h) !== undefined, {
      error: 'expected a hash "scrypt$N$r$p$salt$hash" (make one with `deno task hash-password`)',
    }),
  ).optional(),
  check: fnOf<(request: AuthCheckRequest, opts: { signal: AbortSignal }) => boolean | Promise<boolean>>()
    .optional(),
  maxFailures: z.number().int().min(1).max(1000).default(5),
  failureWindow: duration.default(900_000),
  senderLogins: z.union([
    z.record(z.string().min(1), z.array(z.string())),
    fnOf<(address: string) => string[] | undefined | Promise<string[] | undefined>>(),
  ]).optional(),
}).strict().refine((a) => a.users !== undefined || a.check !== undefined, {
  error: "auth needs users or check",
});

const policyChain = z.array(fn).default([]);

/** One name a peer certificate may carry (RFC 6125): a host name, an IP address, or `*.domain`. */
const verifyName = z.string().refine((n) => {
  const item = parseHostListItem(n);
  if (typeof item === "string" || item.negate) return false;
  if (item.kind === "cidr") return !n.includes("/");
  if (item.kind === "suffix") return item.suffix.split(".").length > 2; // ".partner.example", never ".com"
  return item.kind === "name";
}, {
  error: (i) =>
    `expected a host name, an IP address or "*.domain" with two labels at least, got ${
      JSON.stringify(i.input)
    }`,
});

/** Event handlers by event name, prefix of the colon tree ("msg", "msg:host", "tls") or "*". */
const eventHandlers = z.partialRecord(z.enum(EVENT_KEYS as [string, ...string[]]), fn);

/** A check object made by a factory such as spf(): src/policy/check.ts has its type (config imports only core). */
const check = z.custom<{ name: string }>((v) => {
  if (typeof v !== "object" || v === null) return false;
  const c = v as Record<string, unknown>;
  return typeof c.name === "string" &&
    ["open", "close", "connect", "helo", "message"].every((k) =>
      c[k] === undefined || typeof c[k] === "function"
    );
}, {
  error: "expected a check made by a factory such as spf() (an object with a name and stage methods)",
});

const retryRule = z.object({
  every: duration.refine((ms) => ms > 0, { error: "every must be more than zero" }),
  factor: z.number().min(1, { error: "factor must be 1 or more" }).optional(),
  until: duration,
}).strict();

/** Rules whose `until` cutoffs grow strictly, as the retry schedule needs. */
const retryRules = z.array(retryRule).superRefine((rules, ctx) => {
  for (let i = 1; i < rules.length; i++) {
    if (rules[i].until <= rules[i - 1].until) {
      ctx.addIssue({ code: "custom", path: [i, "until"], message: "must be later than the rule before" });
    }
  }
});

/** Outbound TLS and protocol choices, per host lists (Exim's option names). Also settable per route. */
const transportOptions = {
  hostsRequireTls: hostList.optional(),
  tlsVerifyHosts: hostList.optional(),
  tlsTryVerifyHosts: hostList.optional(),
  tlsVerifyCertHostnames: hostList.optional(),
  hostsRequestOcsp: hostList.optional(),
  hostsRequireOcsp: hostList.optional(),
  hostsTryPrdr: hostList.optional(),
  hostsTryDane: hostList.optional(),
  hostsRequireDane: hostList.optional(),
  dnssecRequestDomains: hostList.optional(),
  dnssecRequireDomains: hostList.optional(),
};

/**
 * A route host as routing reads it: a name, `name:port`, an IP address, `[address]` or `[address]:port`
 * (port 1–65535). Anything else would only be found out at delivery, as a name that never resolves.
 */
function routeHostProblem(text: string): string | undefined {
  const bracket = /^\[([^\]]*)\](?::(\d+))?$/.exec(text);
  let port: string | undefined;
  if (bracket) {
    if (!isIp(bracket[1])) return `"${text}": not an IP address between the brackets`;
    port = bracket[2];
  } else if (!isIp(text)) {
    const m = /^([A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?)(?::(\d+))?$/.exec(text);
    if (!m) return `"${text}": expected a host name, "name:port", "[address]" or "[address]:port"`;
    port = m[3];
  }
  if (port !== undefined && !(Number(port) >= 1 && Number(port) <= 65535)) {
    return `"${text}": the port must be 1–65535`;
  }
  return undefined;
}

const routeHost = z.string().min(1).superRefine((text, ctx) => {
  const problem = routeHostProblem(text);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const route = z.object({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/, { error: "letters, digits, _ . - only" }).optional(),
  domains: hostList,
  hosts: z.union([
    z.array(routeHost).min(1),
    fnOf<(domain: string) => string[] | Promise<string[]>>(),
  ])
    .optional(),
  mx: z.boolean().optional(),
  port: port.default(25),
  dsnLasthop: z.boolean().default(false),
  /** AUTH to the route's hosts (only over TLS) */
  auth: z.object({ user: z.string().min(1), password: z.string().min(1) }).strict().optional(),
  /** This route's own event handlers: they run before the global ones for its deliveries */
  events: eventHandlers.optional(),
  /** Names (or `*.suffix` patterns, or IP addresses) the peer certificate may carry besides the host's own */
  tlsVerifyNames: z.array(verifyName).min(1, { error: "list at least one name, or leave tlsVerifyNames out" })
    .optional(),
  ...transportOptions,
}).strict().refine((r) => (r.hosts !== undefined) !== (r.mx === true), {
  error: "a route needs either hosts or mx: true",
});

/** The whole configuration as written in config.ts. */
export const configSchema = z.object({
  hostname: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, { error: "expected a host name" })
    .optional(),
  listen: z.array(listener).min(1, { error: "at least one listener" }).default([{
    address: "127.0.0.1",
    port: 2525,
    mode: "smtp",
    submission: false,
  }]),
  spool: z.object({
    dir: z.string().min(1).default("./var/spool"),
    minFree: size.default(100 * 1024 * 1024),
  }).strict().prefault({}),
  relay: z.object({
    domains: hostList.default([]),
    clients: hostList.default(["127.0.0.0/8", "::1"]),
  }).strict().default({ domains: [], clients: ["127.0.0.0/8", "::1"] }),
  limits: z.object({
    commandLine: z.number().int().min(512).max(65536).default(512),
    textLine: z.number().int().min(1000).max(1_000_000).default(1000),
    // SQLite stores at most 1,000,000,000 octets a blob (SQLITE_MAX_LENGTH); 900 MiB leaves room for the
    // Received: header and the other fields Ferry prepends.
    messageSize: size.refine((v) => v <= MAX_MESSAGE_SIZE, {
      error: `at most "900MB" (${MAX_MESSAGE_SIZE} octets): the spool's SQLite stores at most 1 GB a message`,
    }).default(50 * 1024 * 1024),
    // What the messages being received may hold in memory together; default: 512 MiB, or room for two
    // messages of the largest size when that is more.
    dataMemory: size.optional(),
    recipients: z.number().int().min(1).max(100_000).default(100),
    badCommands: z.number().int().min(1).max(1000).default(10),
    greetingDelay: timerDuration.default(0),
    commandTimeout: timerDuration.default(300_000),
    dataTimeout: timerDuration.default(300_000),
    connections: z.number().int().min(1).default(1000),
    connectionsPerIp: z.number().int().min(1).default(50),
    policyTimeout: timerDuration.default(30_000),
    eventTimeout: timerDuration.default(5_000),
    shutdownGrace: timerDuration.default(30_000),
  }).strict().superRefine((l, ctx) => {
    if (l.dataMemory !== undefined && l.dataMemory < l.messageSize) {
      ctx.addIssue({
        code: "custom",
        path: ["dataMemory"],
        message:
          `must be at least limits.messageSize (${l.messageSize} octets): a message that size could never be kept`,
      });
    }
  }).transform((l) => ({
    ...l,
    dataMemory: l.dataMemory ?? Math.max(DATA_MEMORY_DEFAULT, 2 * l.messageSize),
  }))
    .prefault({}),
  smtp: z.object({
    banner: z.string().regex(/^[^\r\n]*$/, { error: "must be one line" }).default("ESMTP Ferry"),
    bareLineEndings: z.enum(["reject", "normalize"]).default("reject"),
    pipeliningAdvertiseHosts: hostList.default("*"),
    chunkingAdvertiseHosts: hostList.default("*"),
    smtputf8AdvertiseHosts: hostList.default("*"),
    hostLookup: hostList.default([]),
  }).strict().prefault({}),
  dsn: z.object({ advertiseHosts: hostList.default("*") }).strict().prefault({}),
  prdr: z.object({ enable: z.boolean().default(false) }).strict().prefault({}),
  auth: authSection.optional(),
  admin: z.object({
    enable: z.boolean().default(true),
    listen: z.string().refine((s) => parseAdminListen(s) !== undefined, {
      error: 'expected "address:port" with an IP address, e.g. "127.0.0.1:8025" or "[::1]:8025"',
    }).default("127.0.0.1:8025"),
    tokens: z.array(z.string().min(16, { error: "a token needs at least 16 characters" })).default([]),
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
  }).strict().prefault({}),
  proxyRequiredHosts: hostList.default([]),
  proxyTimeout: timerDuration.default(3000),
  tls: z.object({
    certificates: z.array(certificateSet).default([]),
    advertiseHosts: hostList.default("*"),
    protocols: z.array(z.enum(["TLS1.2", "TLS1.3"])).min(1).default(["TLS1.2", "TLS1.3"]),
    ciphers: z.string().optional(),
    ciphersuites: z.string().optional(),
    groups: z.string().optional(),
    requestClientCert: z.boolean().default(false),
    clientCa: z.string().optional(),
    handshakeTimeout: timerDuration.default(30_000),
    library: z.object({ ssl: z.string(), crypto: z.string() }).strict().optional(),
  }).strict().refine((t) => t.requestClientCert === (t.clientCa !== undefined), {
    error: "requestClientCert and clientCa go together: client certificates are verified against clientCa",
  }).prefault({}),
  policy: z.object({
    connect: policyChain,
    helo: policyChain,
    mail: policyChain,
    rcpt: policyChain,
    data: policyChain,
    prdr: policyChain,
  }).strict().prefault({}),
  checks: z.array(check).default([]),
  authservId: z.string().regex(/^[^\s;()"]+$/, { error: "expected a token without spaces, ';' or quotes" })
    .optional(),
  quarantine: z.object({ route: z.string().min(1) }).strict().optional(),
  outbound: z.array(fn).default([]),
  srs: z.object({
    domain: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, {
      error: "expected a domain name",
    }),
    secrets: z.array(z.string().min(1, { error: "a secret must not be empty" })).min(1).optional(),
    secretFile: z.string().min(1).optional(),
    maxAge: duration.default(21 * 86_400_000),
    hashLength: z.number().int().min(4).max(27).default(4),
    base64url: z.boolean().default(false),
    routes: z.array(z.string().min(1)).optional(),
    localDomains: hostList.optional(),
  }).strict().refine((s) => (s.secrets === undefined) !== (s.secretFile === undefined), {
    error: "srs needs secrets or secretFile (one of them)",
  }).optional(),
  dmarc: z.object({
    reports: z.object({
      interval: timerDuration.refine((ms) => ms >= 60_000, { error: "at least one minute" }).default(
        86_400_000,
      ),
      orgName: z.string().min(1).optional(),
      email: z.string().regex(/^[^\s@<>]+@[^\s@<>]+$/, {
        error: "expected an address like dmarc@example.org",
      })
        .optional(),
      historyFile: z.string().min(1).optional(),
      failure: z.boolean().default(false),
    }).strict().optional(),
  }).strict().prefault({}),
  tlsRpt: z.object({
    enable: z.boolean().default(false),
    organizationName: z.string().min(1).optional(),
    contactInfo: z.string().min(1).optional(),
    email: z.string().regex(/^[^\s@<>]+@[^\s@<>]+$/, {
      error: "expected an address like tlsrpt@example.org",
    }).optional(),
    caFile: z.string().min(1).optional(),
    timeout: timerDuration.refine((ms) => ms > 0, { error: "must be more than zero" }).default(30_000),
  }).strict().prefault({}),
  arc: z.object({
    seal: z.object({
      domain: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, {
        error: "expected a domain name",
      }),
      selector: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/, {
        error: "expected a selector (letters, digits, '.', '-', '_')",
      }),
      keyFile: z.string({ error: "expected the path of a PEM private key file" }).min(1),
      algorithm: z.enum(["rsa-sha256", "ed25519-sha256"]).optional(),
    }).strict().optional(),
    routes: z.array(z.string().min(1)).optional(),
  }).strict().prefault({}),
  dkim: z.object({
    sign: z.array(
      z.object({
        domain: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, {
          error: "expected a domain name",
        }),
        selector: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/, {
          error: "expected a selector (letters, digits, '.', '-', '_')",
        }),
        keyFile: z.string({ error: "expected the path of a PEM private key file" }).min(1),
        algorithm: z.enum(["rsa-sha256", "ed25519-sha256"]).optional(),
        headers: z.array(
          z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, { error: "expected a header field name" }),
        )
          .min(1).optional(),
      }).strict(),
    ).default([]),
  }).strict().prefault({}),
  events: eventHandlers.default({}),
  routes: z.array(route).superRefine((routes, ctx) => {
    const seen = new Set<string>();
    routes.forEach((r, i) => {
      if (r.name === undefined) return;
      if (seen.has(r.name)) {
        ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate route name "${r.name}"` });
      }
      seen.add(r.name);
    });
  }).default([{ domains: "*", mx: true, port: 25, dsnLasthop: false }]),
  retry: z.array(z.object({ domains: hostList, rules: retryRules }).strict()).default([{
    domains: "*",
    rules: [
      { every: 900_000, until: 7_200_000 },
      { every: 3_600_000, factor: 1.5, until: 57_600_000 },
      { every: 21_600_000, until: 345_600_000 },
    ],
  }]),
  delivery: z.object({
    enable: z.boolean().default(true),
    heloName: z.string().optional(),
    queueInterval: duration.default(60_000),
    concurrency: z.number().int().min(1).max(10_000).default(50),
    destinationConcurrency: z.number().int().min(1).max(10_000).default(20),
    deadDestinationAfter: z.number().int().min(0).max(1000).default(3),
    retryJitter: z.number().min(0).max(1).default(0.1),
    connectionsPerHost: z.number().int().min(1).max(1000).default(10),
    connectTimeout: timerDuration.default(30_000),
    commandTimeout: timerDuration.default(300_000),
    dataTimeout: timerDuration.default(600_000),
    idleTimeout: timerDuration.default(5_000),
    hostRetryBase: duration.default(60_000),
    hostRetryMax: duration.default(3_600_000),
    delayWarning: duration.default(14_400_000),
    tlsVerifyCertificates: z.string().optional(),
    hostsRequireTls: hostList.default([]),
    tlsVerifyHosts: hostList.default([]),
    tlsTryVerifyHosts: hostList.default("*"),
    tlsVerifyCertHostnames: hostList.default("*"),
    hostsRequestOcsp: hostList.default("*"),
    hostsRequireOcsp: hostList.default([]),
    hostsTryPrdr: hostList.default("*"),
    hostsTryDane: hostList.default("*"),
    hostsRequireDane: hostList.default([]),
    dnssecRequestDomains: hostList.default("*"),
    dnssecRequireDomains: hostList.default([]),
    mtaSts: z.object({
      enable: z.boolean().default(true),
      port: port.default(443),
      caFile: z.string().min(1).optional(),
      timeout: timerDuration.default(10_000),
    }).strict().prefault({}),
  }).strict().prefault({}),
  dns: z.object({
    nameservers: z.array(
      z.object({
        address: ipAddress,
        port: port.default(53),
        trusted: z.boolean().default(false),
      }).strict(),
    ).optional(),
    timeout: timerDuration.default(2000),
  }).strict().prefault({}),
  redis: z.object({
    servers: z.array(
      z.object({
        url: z.string().regex(/^(redis|rediss):\/\/[^\s]+$/, { error: "expected redis://host:port" }),
        db: z.number().int().min(0).optional(),
        password: z.string().optional(),
      }).strict(),
    ).min(1, { error: "at least one server" }),
    timeout: timerDuration.refine((ms) => ms > 0, { error: "must be more than zero" }).default(1000),
  }).strict().optional(),
  log: z.object({
    file: z.string().optional(),
    format: z.enum(["exim", "json"]).default("exim"),
  }).strict().prefault({}),
}).strict().superRefine((c, ctx) => {
  if (c.quarantine && !c.routes.some((r) => r.name === c.quarantine!.route)) {
    ctx.addIssue({
      code: "custom",
      path: ["quarantine", "route"],
      message: `no route is named "${c.quarantine.route}"`,
    });
  }
  // srs.routes and arc.routes name routes by `name`, or by the name an unnamed route gets (`mx0`, `route1`):
  // a misspelt one would silently never rewrite or seal.
  const routeNames = new Set(c.routes.map(routeName));
  for (const [section, names] of [["srs", c.srs?.routes], ["arc", c.arc.routes]] as const) {
    names?.forEach((name, i) => {
      if (!routeNames.has(name)) {
        ctx.addIssue({
          code: "custom",
          path: [section, "routes", i],
          message: `no route is named "${name}"`,
        });
      }
    });
  }
  // A rate limit kept in Redis, or a Redis lookup as a host list, would answer 451 to every message.
  if (!c.redis) {
    for (const need of findRedisNeeds(c)) {
      ctx.addIssue({
        code: "custom",
        path: need.path,
        message: `${need.what} needs redis to be configured (redis.servers)`,
      });
    }
  }
  if (c.tlsRpt.enable && !c.delivery.enable) {
    ctx.addIssue({
      code: "custom",
      path: ["tlsRpt", "enable"],
      message:
        "TLS-RPT needs delivery.enable (its results come from deliveries, its reports go out through them)",
    });
  }
  const admin = parseAdminListen(c.admin.listen);
  if (c.admin.enable && admin && !admin.loopback && (c.admin.tokens.length === 0 || !c.admin.tls)) {
    ctx.addIssue({
      code: "custom",
      path: ["admin", "listen"],
      message: "a non-loopback admin listener needs admin.tokens and admin.tls (cert and key)",
    });
  }
  c.listen.forEach((l, i) => {
    if (l.mode === "smtps" && c.tls.certificates.length === 0) {
      ctx.addIssue({ code: "custom", path: ["listen", i, "mode"], message: "smtps needs tls.certificates" });
    }
    if (l.submission && !c.auth) {
      ctx.addIssue({ code: "custom", path: ["listen", i, "submission"], message: "submission needs auth" });
    }
    if (l.submission && c.tls.certificates.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["listen", i, "submission"],
        message: "submission needs tls.certificates (AUTH is offered only over TLS)",
      });
    }
  });
});

/** The configuration as the program uses it: defaults filled in, durations in ms, sizes in octets. */
export type ResolvedConfig = z.output<typeof configSchema>;
/** The configuration as written by the user. */
export type ConfigInput = z.input<typeof configSchema>;
