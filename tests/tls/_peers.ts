/**
 * Test plumbing for the TLS tests: runs `openssl s_client` / `openssl s_server` as real peers and a Deno
 * loopback listener that does `tlsAccept` and answers one line.
 */

import { tlsAccept, type TlsAcceptOptions, type TlsServerContext } from "../../src/tls/server_context.ts";
import type { TlsStream } from "../../src/tls/tls_stream.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Output of one openssl CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout + stderr */
  all: string;
}

/** Runs `openssl s_client` against 127.0.0.1:port, sending `input` and waiting for the server to close. */
export async function sClient(port: number, args: string[], input = "ping\n"): Promise<CliResult> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-ign_eof", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(15_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(enc.encode(input)).catch(() => {});
  await w.close().catch(() => {});
  const out = await child.output();
  const stdout = dec.decode(out.stdout), stderr = dec.decode(out.stderr);
  return { code: out.code, stdout, stderr, all: stdout + stderr };
}

/** Waits until the server has accepted its `i`-th connection and returns that connection's outcome. */
export async function nth(srv: EchoServer, i: number): Promise<Accepted> {
  const deadline = Date.now() + 10_000;
  while (srv.accepted.length <= i) {
    if (Date.now() > deadline) throw new Error(`connection ${i} never accepted`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return await srv.accepted[i];
}

/** One accepted connection's outcome. */
export interface Accepted {
  stream?: TlsStream;
  error?: unknown;
  line?: string;
}

/** A loopback listener doing tlsAccept + one echoed line per connection. */
export interface EchoServer {
  port: number;
  /** Outcomes, in accept order, once each connection is done */
  accepted: Promise<Accepted>[];
  close(): Promise<void>;
}

async function readLine(s: TlsStream): Promise<string> {
  const buf = new Uint8Array(1024);
  let text = "";
  while (!text.includes("\n")) {
    const n = await s.read(buf);
    if (n === null) break;
    text += dec.decode(buf.subarray(0, n));
  }
  return text.trim();
}

/**
 * Listens on 127.0.0.1:0; each connection is handed to `before` (plaintext prelude, may return initial
 * handshake bytes), then tlsAccept, then "echo <line> sni=<sni> peer=<subject> verified=<bool>".
 */
export function echoServer(
  ctx: TlsServerContext,
  opts: TlsAcceptOptions = {},
  before?: (conn: Deno.Conn) => Promise<Uint8Array | undefined>,
): EchoServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Promise<Accepted>[] = [];
  const handle = async (conn: Deno.Conn): Promise<Accepted> => {
    let stream: TlsStream;
    try {
      const initial = before ? await before(conn) : undefined;
      stream = await tlsAccept(conn, ctx, { ...opts, initial });
    } catch (error) {
      return { error };
    }
    try {
      const line = await readLine(stream);
      const i = stream.info;
      await stream.write(
        enc.encode(`echo ${line} sni=${i.sni} peer=${i.peerSubject} verified=${i.peerVerified}\n`),
      );
      return { stream, line };
    } catch (error) {
      return { stream, error };
    } finally {
      stream.close();
      await stream.closed;
    }
  };
  const loop = (async () => {
    for await (const conn of listener) accepted.push(handle(conn));
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    accepted,
    async close() {
      listener.close();
      await loop.catch(() => {});
      await Promise.allSettled(accepted);
    },
  };
}

/** A running `openssl s_server`; `stop()` kills it. */
export interface SServer {
  port: number;
  output(): string;
  stop(): Promise<void>;
}

/** Starts `openssl s_server -accept 127.0.0.1:0 -rev`-like peer on a free port and waits until it listens. */
export async function sServer(args: string[]): Promise<SServer> {
  const child = new Deno.Command("openssl", {
    args: ["s_server", "-accept", "127.0.0.1:0", "-naccept", "1000", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const pump = async (r: ReadableStream<Uint8Array>) => {
    for await (const chunk of r) text += dec.decode(chunk);
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const deadline = Date.now() + 10_000;
  let port = 0;
  while (!port) {
    const m = text.match(/ACCEPT\s+(?:127\.0\.0\.1|\[?[:\d.]+\]?):(\d+)/);
    if (m) port = Number(m[1]);
    else if (Date.now() > deadline) {
      child.kill();
      throw new Error(`s_server did not start: ${text}`);
    } else await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    output: () => text,
    async stop() {
      try {
        child.kill();
      } catch { /* gone */ }
      await child.stdin.close().catch(() => {});
      await child.status;
      await pumps.catch(() => {});
    },
  };
}
