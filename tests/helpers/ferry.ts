/** Test harness: boots Ferry in-process on a free loopback port with a temporary spool and an in-memory log. */

import { validateConfig } from "../../src/config/load.ts";
import { MemoryLog } from "../../src/core/log.ts";
import { type Ferry, startFerry } from "../../src/main.ts";
import type { FerryConfig } from "../../mod.ts";
import type { Resolver } from "../../src/dns/resolver.ts";
import { dirname } from "node:path";

/** A running test instance. */
export interface TestFerry extends Ferry {
  port: number;
  dir: string;
  memlog: MemoryLog;
}

/**
 * Starts Ferry with `overrides` on top of test defaults (port 0 → a free port, spool in a temp dir).
 * A test that brings its own spool owns its directory: `dir` is then the spool's parent, and no temp dir is
 * made that nothing would remove.
 */
export async function startTestFerry(
  overrides: FerryConfig = {},
  opts: { resolver?: Resolver } = {},
): Promise<TestFerry> {
  const own = overrides.spool?.dir;
  const dir = own !== undefined ? dirname(own) : await Deno.makeTempDir({ prefix: "ferry-test-" });
  const config = validateConfig({
    hostname: "ferry.test",
    listen: [{ address: "127.0.0.1", port: 0 }],
    spool: { dir: `${dir}/spool` },
    relay: { domains: ["example.test"], clients: ["192.0.2.0/24"] },
    // Tests never reach a real resolver: delivery is off unless a test turns it on with its own resolver.
    delivery: { enable: false },
    // The admin listener is off unless a test asks for it (then usually on port 0).
    admin: { enable: false },
    ...overrides,
  });
  const memlog = new MemoryLog();
  const ferry = await startFerry(config, { log: memlog, resolver: opts.resolver });
  return { ...ferry, port: ferry.addresses[0].port, dir, memlog };
}

/** Runs `fn` with a fresh instance and always stops it and removes its files. */
export async function withFerry(
  overrides: FerryConfig,
  fn: (f: TestFerry) => Promise<void>,
): Promise<void> {
  const f = await startTestFerry(overrides);
  try {
    await fn(f);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A minimal raw SMTP client for tests: send bytes, read replies. */
export class RawClient {
  #conn: Deno.Conn;
  #buf = "";
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }
  static async connect(port: number, host = "127.0.0.1"): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: host, port }));
  }
  get conn(): Deno.Conn {
    return this.#conn;
  }
  async send(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string" ? enc.encode(text) : text;
    let off = 0;
    while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
  }
  /** Reads one complete (possibly multi-line) reply; null when the server closed first. */
  async reply(timeoutMs = 5000): Promise<{ code: number; text: string; lines: string[] } | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^((?:\d{3}-[^\n]*\n)*)(\d{3})(?: [^\n]*)?\n/.exec(this.#buf);
      if (m) {
        const whole = m[0];
        this.#buf = this.#buf.slice(whole.length);
        const lines = whole.trimEnd().split(/\r?\n/).map((l) => l.replace(/\r$/, ""));
        return { code: Number(m[2]), text: lines.map((l) => l.slice(4)).join("\n"), lines };
      }
      const chunk = new Uint8Array(65536);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms; buffer: ${JSON.stringify(this.#buf)}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.#conn.read(chunk),
        new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), left))),
      ]).finally(() => clearTimeout(timer));
      if (n === "timeout") continue;
      if (n === null) return null;
      this.#buf += dec.decode(chunk.subarray(0, n));
    }
  }
  /** Sends a line (CRLF added) and reads the reply. */
  async cmd(line: string): Promise<{ code: number; text: string; lines: string[] } | null> {
    await this.send(line + "\r\n");
    return await this.reply();
  }
  /** True when the server has closed the connection (reads EOF within the timeout). */
  async closed(timeoutMs = 3000): Promise<boolean> {
    try {
      return (await this.reply(timeoutMs)) === null;
    } catch {
      return false;
    }
  }
  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}
