/**
 * Test helpers for delivery tests: a tiny scripted SMTP server (RFC 5321 subset: EHLO/HELO, MAIL, RCPT,
 * DATA, RSET, NOOP, QUIT) whose per-recipient replies and delays a test chooses, a raw submitting client,
 * a Ferry started on a chosen spool directory (for restarts), and a DSN parser that runs Python's `email`
 * package as an independent reader of Ferry's reports. Listens on loopback only.
 */

import assert from "node:assert/strict";
import { validateConfig } from "../../src/config/load.ts";
import { MemoryLog } from "../../src/core/log.ts";
import type { Resolver } from "../../src/dns/resolver.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { type Ferry, startFerry } from "../../src/main.ts";
import type { FerryConfig } from "../../mod.ts";
import { RawClient, startTestFerry, type TestFerry } from "./ferry.ts";
import { createPki, ferryTls, type Issued, type TestPki } from "./pki.ts";

/** One message as the downstream received it. */
export interface ReceivedMessage {
  /** MAIL FROM line as sent */
  mail: string;
  /** The reverse path without brackets */
  from: string;
  /** Accepted recipients (addresses) */
  rcpts: string[];
  /** Full RCPT lines as sent (with DSN parameters) */
  rcptLines: string[];
  /** The message text, dot-unstuffed, CRLF line ends */
  data: string;
  /** When its MAIL command arrived (ms since the epoch) */
  at: number;
}

/** Options for `startDownstream`. */
export interface DownstreamOptions {
  /** Address to listen on (default 127.0.0.1) */
  hostname?: string;
  /** Port (default 0: a free one) */
  port?: number;
  /** Reply line for MAIL (e.g. "451 4.3.0 busy"); undefined → 250 */
  mail?: (from: string) => string | undefined;
  /** Reply line for a RCPT (e.g. "550 5.1.1 No such user"); undefined → 250 */
  rcpt?: (address: string) => string | undefined;
  /** Advertise DSN (default false) */
  dsn?: boolean;
  /** Wait this long before answering the final dot */
  dataDelayMs?: number;
  /** Called when a transaction's final dot arrives, before it is answered */
  onDataEnd?: (tx: ReceivedMessage) => void;
}

/** A running scripted SMTP server. */
export interface Downstream {
  port: number;
  /** Accepted TCP connections so far */
  connections: number;
  /** Messages received (after the 250 to the final dot) */
  messages: ReceivedMessage[];
  /** Final dots received, counted before the reply (and before `dataDelayMs`) */
  dataEnds: number;
  /** Ends every open session as an idle timeout does: optionally sends `reply` first, then closes */
  kick(reply?: string): Promise<void>;
  stop(): Promise<void>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Starts a scripted SMTP server on loopback (127.0.0.1 and a free port unless told otherwise). */
export function startDownstream(opts: DownstreamOptions = {}): Downstream {
  const listener = Deno.listen({ hostname: opts.hostname ?? "127.0.0.1", port: opts.port ?? 0 });
  const conns = new Set<Deno.Conn>();
  const sessions = new Set<Promise<void>>();
  let stopped = false;
  const state: Downstream = {
    port: (listener.addr as Deno.NetAddr).port,
    connections: 0,
    messages: [],
    dataEnds: 0,
    async kick(reply?: string) {
      for (const c of conns) {
        try {
          if (reply) await c.write(enc.encode(reply + "\r\n"));
          c.close();
        } catch { /* closed */ }
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
      await Promise.allSettled([...sessions]);
    },
  };
  const serve = async (conn: Deno.Conn) => {
    const write = async (line: string) => {
      const b = enc.encode(line + "\r\n");
      let off = 0;
      while (off < b.length) off += await conn.write(b.subarray(off));
    };
    let buf = "";
    let tx: ReceivedMessage | undefined;
    let inData = false;
    const chunk = new Uint8Array(65536);
    await write("220 downstream.test ESMTP scripted");
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) return;
      buf += dec.decode(chunk.subarray(0, n));
      for (;;) {
        if (inData) {
          const end = buf.indexOf("\r\n.\r\n");
          const atStart = buf.startsWith(".\r\n");
          if (end < 0 && !atStart) break;
          const body = atStart ? "" : buf.slice(0, end + 2);
          buf = buf.slice(atStart ? 3 : end + 5);
          inData = false;
          tx!.data = body.replace(/^\.\./gm, ".");
          state.dataEnds++;
          opts.onDataEnd?.(tx!);
          if (opts.dataDelayMs) await new Promise((r) => setTimeout(r, opts.dataDelayMs));
          state.messages.push(tx!);
          tx = undefined;
          await write("250 2.0.0 queued as scripted");
          continue;
        }
        const eol = buf.indexOf("\r\n");
        if (eol < 0) break;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO") {
          await write(
            [
              "250-downstream.test",
              "250-PIPELINING",
              "250-8BITMIME",
              ...(opts.dsn ? ["250-DSN"] : []),
              "250 SIZE",
            ]
              .join("\r\n"),
          );
        } else if (verb === "HELO") await write("250 downstream.test");
        else if (verb === "MAIL") {
          const from = /<([^>]*)>/.exec(line)?.[1] ?? "";
          const refusal = opts.mail?.(from);
          if (refusal) await write(refusal);
          else {
            tx = { mail: line, from, rcpts: [], rcptLines: [], data: "", at: Date.now() };
            await write("250 2.1.0 ok");
          }
        } else if (verb === "RCPT") {
          const addr = /<([^>]*)>/.exec(line)?.[1] ?? "";
          const answer = opts.rcpt?.(addr);
          if (!tx) await write("503 5.5.1 MAIL first");
          else if (answer) await write(answer);
          else {
            tx.rcpts.push(addr);
            tx.rcptLines.push(line);
            await write("250 2.1.5 ok");
          }
        } else if (verb === "DATA") {
          if (!tx || tx.rcpts.length === 0) await write("554 5.5.1 no valid recipients");
          else {
            inData = true;
            await write("354 go ahead");
          }
        } else if (verb === "RSET") {
          tx = undefined;
          await write("250 2.0.0 ok");
        } else if (verb === "NOOP") await write("250 2.0.0 ok");
        else if (verb === "QUIT") {
          await write("221 2.0.0 bye");
          return;
        } else await write("502 5.5.2 not implemented");
      }
    }
  };
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      state.connections++;
      conns.add(conn);
      const p = serve(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        sessions.delete(p);
        try {
          conn.close();
        } catch { /* closed */ }
      });
      sessions.add(p);
    }
  })();
  return state;
}

/**
 * Polls `pred` every 25 ms until it holds; throws naming `what` after `ms`. `ms` only bounds a wait for a
 * positive signal: keep it at the default 8 s or above unless the delay itself is what a test asserts (on
 * a loaded 2-core CI machine a delivery or a log line can take more than 2–3 s).
 */
export async function waitFor(
  pred: () => boolean | Promise<boolean>,
  ms = 8000,
  what = "condition",
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} not met within ${ms} ms`);
}

/** Options for `submit`. */
export interface SubmitOptions {
  from?: string;
  /** Parameters after MAIL FROM:<...>, e.g. " RET=HDRS" */
  mailParams?: string;
  /** Parameters per RCPT, e.g. { "a@x": " NOTIFY=SUCCESS" } */
  rcptParams?: Record<string, string>;
  body?: string;
}

/** Submits one message to Ferry on `port`; returns the queue id from the 250 reply. */
export async function submit(port: number, rcpts: string[], opts: SubmitOptions = {}): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
    const from = opts.from ?? "sender@client.test";
    assert.equal((await c.cmd(`MAIL FROM:<${from}>${opts.mailParams ?? ""}`))?.code, 250);
    for (const r of rcpts) {
      const reply = await c.cmd(`RCPT TO:<${r}>${opts.rcptParams?.[r] ?? ""}`);
      assert.equal(reply?.code, 250, `RCPT ${r}: ${reply?.text}`);
    }
    assert.equal((await c.cmd("DATA"))?.code, 354);
    const body = opts.body ?? "Subject: test\r\nMessage-ID: <t@client.test>\r\n\r\ntest body\r\n";
    const r = await c.cmd(body + ".");
    assert.equal(r?.code, 250);
    await c.cmd("QUIT");
    return /id=(\S+)/.exec(r!.text)![1];
  } finally {
    c.close();
  }
}

/** A Ferry on a given spool directory (a restart uses the same one), logging into memory. */
export interface DirFerry extends Ferry {
  port: number;
  /** The directory holding the spool (pass it again to restart on the same spool) */
  dir: string;
  memlog: MemoryLog;
  /** Stops Ferry and removes `dir` */
  dispose(): Promise<void>;
}

/**
 * Starts Ferry with its spool in `opts.dir`/spool (a new temp dir when absent), relaying for loopback
 * clients; delivery must come with `dns.nameservers` or `opts.resolver` (never the system resolver).
 */
export async function startFerryIn(
  overrides: FerryConfig,
  opts: { dir?: string; resolver?: Resolver } = {},
): Promise<DirFerry> {
  const o = overrides as { delivery?: { enable?: boolean }; dns?: { nameservers?: unknown[] } };
  if (o.delivery?.enable !== false && !opts.resolver && !o.dns?.nameservers?.length) {
    throw new Error("startFerryIn: delivery needs a loopback resolver");
  }
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "ferry-out-" });
  const config = validateConfig({
    hostname: "ferry.test",
    listen: [{ address: "127.0.0.1", port: 0 }],
    spool: { dir: `${dir}/spool` },
    relay: { domains: [], clients: ["127.0.0.0/8"] },
    // Parallel instances must not fight over the default admin port 127.0.0.1:8025.
    admin: { enable: false },
    ...overrides,
  });
  const memlog = new MemoryLog();
  const ferry = await startFerry(config, { log: memlog, resolver: opts.resolver });
  return {
    ...ferry,
    port: ferry.addresses[0].port,
    dir,
    memlog,
    async dispose() {
      await ferry.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** An upstream Ferry whose reports to the sender (client.test) go to a recording downstream. */
export interface ReportRig {
  up: DirFerry;
  reports: Downstream;
  stop(): Promise<void>;
}

/**
 * Starts a {@link ReportRig}: `routes` come after the reports route, retries are fast (every 200 ms for
 * 1 s) and `extra` overrides the rest of the config (its `delivery` is merged into the fast defaults).
 */
export async function startReportRig(
  routes: Record<string, unknown>[],
  extra: FerryConfig = {},
): Promise<ReportRig> {
  const reports = startDownstream();
  const up = await startFerryIn({
    routes: [{ name: "reports", domains: "client.test", hosts: [`127.0.0.1:${reports.port}`] }, ...routes],
    retry: [{ domains: "*", rules: [{ every: "200ms", until: "1s" }] }],
    ...extra,
    delivery: { enable: true, hostRetryBase: "50ms", queueInterval: "100ms", ...extra.delivery },
  } as FerryConfig, { resolver: new MemoryResolver() });
  return {
    up,
    reports,
    async stop() {
      await up.dispose();
      await reports.stop();
    },
  };
}

/** Waits for a delivery (`=>`) or a deferral (`==`) in `log`; returns the first `=>` line, else the first `==`. */
export async function firstOutcome(log: MemoryLog, ms = 8000, what = "an outcome"): Promise<string> {
  await waitFor(() => linesOf(log, "=>").length + linesOf(log, "==").length > 0, ms, what);
  return linesOf(log, "=>")[0] ?? linesOf(log, "==")[0];
}

/** Log lines (text) that start with `prefix` ("=>", "==", "**", "<="). */
export function linesOf(log: MemoryLog, prefix: string): string[] {
  return log.lines.map((l) => l.text).filter((t) => t.startsWith(prefix + " "));
}

/** A DSN as Python's `email` package reads it. */
export interface ParsedReport {
  contentType: string;
  reportType: string | null;
  /** Content types of the top-level parts */
  parts: string[];
  /** The per-message block of the delivery-status part */
  perMessage: Record<string, string>;
  /** Per-recipient blocks (header names lower-cased) */
  recipients: Record<string, string>[];
  /** Content type of the returned part and its text (headers, and body when returned whole) */
  returned: { type: string; text: string };
  subject: string | null;
  to: string | null;
}

const PY = `
import sys, json, email, re
from email import policy
from email.parser import HeaderParser
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)
out = {"contentType": msg.get_content_type(), "reportType": msg.get_param("report-type"),
       "subject": msg.get("Subject"), "to": msg.get("To"), "parts": [], "perMessage": {},
       "recipients": [], "returned": {"type": "", "text": ""}}
for part in (msg.get_payload() if msg.is_multipart() else []):
    ct = part.get_content_type()
    out["parts"].append(ct)
    if ct in ("message/delivery-status", "message/global-delivery-status"):
        blocks = part.get_payload()
        if ct == "message/global-delivery-status":  # RFC 6533: compat32 reads it as one message, not blocks
            body = re.split(r"\\r?\\n\\r?\\n", part.as_string(), maxsplit=1)[1]
            blocks = [HeaderParser().parsestr(b) for b in re.split(r"\\r?\\n\\r?\\n", body.strip()) if b.strip()]
        if blocks:
            out["perMessage"] = {k.lower(): " ".join(v.split()) for k, v in blocks[0].items()}
            out["recipients"] = [{k.lower(): " ".join(v.split()) for k, v in b.items()} for b in blocks[1:]]
    elif ct in ("message/rfc822", "message/global"):
        inner = part.get_payload()[0]
        out["returned"] = {"type": ct, "text": inner.as_string()}
    elif ct in ("text/rfc822-headers", "message/global-headers"):
        out["returned"] = {"type": ct, "text": part.get_payload()}
print(json.dumps(out))
`;

/** Parses a report with Python's `email` package (python3 on PATH). */
export async function parseReport(message: string | Uint8Array): Promise<ParsedReport> {
  const child = new Deno.Command("python3", {
    args: ["-c", PY],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(typeof message === "string" ? enc.encode(message) : message);
  await w.close();
  const out = await child.output();
  if (!out.success) throw new Error(`python3 email parse failed: ${dec.decode(out.stderr)}`);
  return JSON.parse(dec.decode(out.stdout));
}

/** A second Ferry with STARTTLS and a certificate for mx.example.test from a fresh test CA. */
export interface TlsDownstream {
  pki: TestPki;
  leaf: Issued;
  down: TestFerry;
}

/** Runs `fn` with a TLS downstream; always stops it and removes its files and the PKI. */
export async function withTlsDownstream(fn: (rig: TlsDownstream) => Promise<void>): Promise<void> {
  const pki = await createPki();
  let down: TestFerry | undefined;
  try {
    const leaf = await pki.issue({ cn: "mx.example.test", dns: ["mx.example.test"] });
    down = await startTestFerry({ tls: ferryTls(leaf) });
    await fn({ pki, leaf, down });
  } finally {
    await down?.stop();
    if (down) await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
}
