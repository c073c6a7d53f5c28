/**
 * The queue's control channel on the same machine: a running Ferry listens on the Unix socket
 * `<spool.dir>/control.sock` and answers one JSON request a connection with {@link QueueOps}. The `queue`
 * command line talks to it; the socket file's permissions (the spool directory's) decide who may.
 * Trusts whoever can connect as much as whoever can open spool.db: same directory, same owner.
 */

import type { QueueQuery } from "../spool/spool.ts";
import { errorMessage } from "../core/error_message.ts";
import type { Logger } from "../core/log.ts";
import type { QueueOps } from "./queue_ops.ts";

/** The control socket's name inside the spool directory. */
export const CONTROL_SOCKET = "control.sock";

/** One request. */
export type ControlRequest =
  | { op: "list"; query?: QueueQuery }
  | { op: "show"; id: string }
  | { op: "summary" }
  | { op: "hold" | "release" | "retry" | "bounce" | "delete"; ids: string[] }
  | { op: "flush"; domain?: string };

/** One answer. */
export type ControlResponse = { ok: true; result: unknown } | { ok: false; error: string };

const MAX_REQUEST = 1024 * 1024;

/** Runs one request against `ops`. */
export async function runControlRequest(ops: QueueOps, req: ControlRequest): Promise<unknown> {
  switch (req.op) {
    case "list":
      return await ops.list(req.query ?? {});
    case "show":
      return await ops.show(req.id) ?? null;
    case "summary":
      return await ops.summary();
    case "hold":
      return await ops.hold(req.ids);
    case "release":
      return await ops.release(req.ids);
    case "retry":
      return await ops.retry(req.ids);
    case "bounce":
      return await ops.bounce(req.ids);
    case "delete":
      return await ops.delete(req.ids);
    case "flush":
      return await ops.flush(req.domain);
    default:
      throw new Error(`unknown operation "${(req as { op?: unknown }).op}"`);
  }
}

/** A listening control socket. */
export interface ControlServer {
  path: string;
  close(): Promise<void>;
}

/** Listens on `<dir>/control.sock` (a stale file is replaced: the caller holds the spool's lock). */
export function serveQueueControl(dir: string, ops: QueueOps, log: Logger): ControlServer {
  const path = `${dir.replace(/\/+$/, "")}/${CONTROL_SOCKET}`;
  try {
    Deno.removeSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const listener = Deno.listen({ transport: "unix", path });
  const open = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      const p = handle(conn, ops, log).finally(() => open.delete(p));
      open.add(p);
    }
  })().catch(() => {/* listener closed */});
  return {
    path,
    async close() {
      try {
        listener.close();
      } catch { /* already closed */ }
      await loop;
      await Promise.allSettled([...open]);
      try {
        Deno.removeSync(path);
      } catch { /* gone */ }
    },
  };
}

async function handle(conn: Deno.Conn, ops: QueueOps, log: Logger): Promise<void> {
  let response: ControlResponse;
  try {
    const text = await readLine(conn);
    const req = JSON.parse(text) as ControlRequest;
    response = { ok: true, result: await runControlRequest(ops, req) };
  } catch (err) {
    response = { ok: false, error: errorMessage(err) };
    log.write(`queue control request failed: ${response.error}`);
  }
  try {
    await writeAll(conn, new TextEncoder().encode(JSON.stringify(response) + "\n"));
  } catch { /* the client went away */ }
  try {
    conn.close();
  } catch { /* closed */ }
}

async function readLine(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    const chunk = buf.slice(0, n);
    chunks.push(chunk);
    size += n;
    if (chunk.includes(0x0a)) break;
    if (size > MAX_REQUEST) throw new Error("request too large");
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const text = new TextDecoder().decode(all);
  const nl = text.indexOf("\n");
  return nl < 0 ? text : text.slice(0, nl);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * Sends one request to the Ferry running on `dir`; undefined when none listens there (no socket, or a
 * stale one nobody accepts on).
 */
export async function callQueueControl(
  dir: string,
  req: ControlRequest,
): Promise<ControlResponse | undefined> {
  const path = `${dir.replace(/\/+$/, "")}/${CONTROL_SOCKET}`;
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused) return undefined;
    throw err;
  }
  try {
    await writeAll(conn, new TextEncoder().encode(JSON.stringify(req) + "\n"));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(await new Blob(chunks as Uint8Array<ArrayBuffer>[]).bytes());
    return JSON.parse(text) as ControlResponse;
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
