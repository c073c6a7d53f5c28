/**
 * One query/response exchange with one server: over UDP (RFC 1035 4.2.1) from a fresh socket on a random
 * port, or over TCP with the 2-byte length prefix (RFC 1035 4.2.2, RFC 7766). A UDP datagram is accepted
 * only from the server's address and port and only if `matches` says so (id and question; RFC 5452),
 * others are dropped while waiting. Every exchange ends by its deadline. Private to the dns room.
 */

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { parseIp } from "../core/ip.ts";
import { DnsError } from "./dns_error.ts";
import { isLoopback } from "./nameserver.ts";
import { decodeMessage, type WireMessage } from "./_wire.ts";

/** Where to send and how long to wait. */
export interface Exchange {
  address: string;
  port: number;
  /** Milliseconds before giving up */
  timeout: number;
  signal?: AbortSignal;
  /** Whether a decoded response answers our query */
  matches: (msg: WireMessage) => boolean;
  /** For error messages */
  label: string;
}

function sameAddress(a: string, b: string): boolean {
  const x = parseIp(a), y = parseIp(b);
  return !!x && !!y && x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Waits for a matching datagram; rejects with DnsError TIMEOUT or NETWORK, or the signal's reason. */
export function udpExchange(query: Uint8Array, ex: Exchange): Promise<WireMessage> {
  return new Promise((resolve, reject) => {
    const v4 = parseIp(ex.address)?.length === 4;
    const sock = dgram.createSocket(v4 ? "udp4" : "udp6");
    let done = false;
    const finish = (err: unknown, msg?: WireMessage) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ex.signal?.removeEventListener("abort", onAbort);
      try {
        sock.close();
      } catch { /* already closed */ }
      if (msg) resolve(msg);
      else reject(err);
    };
    const onAbort = () => finish(ex.signal!.reason);
    const timer = setTimeout(
      () => finish(new DnsError("TIMEOUT", `No answer from ${ex.address} port ${ex.port} for ${ex.label}`)),
      ex.timeout,
    );
    if (ex.signal?.aborted) return finish(ex.signal.reason);
    ex.signal?.addEventListener("abort", onAbort, { once: true });
    sock.on(
      "error",
      (cause: unknown) =>
        finish(
          new DnsError("NETWORK", `UDP error with ${ex.address} port ${ex.port} for ${ex.label}`, { cause }),
        ),
    );
    sock.on("message", (buf: Uint8Array, rinfo: { address: string; port: number }) => {
      if (rinfo.port !== ex.port || !sameAddress(rinfo.address, ex.address)) return;
      const msg = decodeMessage(buf);
      if (msg && msg.type === "response" && ex.matches(msg)) finish(undefined, msg);
    });
    // A loopback server is reached from a loopback source, so nothing listens beyond the host.
    const bindAddress = isLoopback(ex.address) ? (v4 ? "127.0.0.1" : "::1") : undefined;
    sock.bind({ port: 0, address: bindAddress }, () => {
      if (done) return;
      sock.send(Buffer.from(query), ex.port, ex.address, (err: unknown) => {
        if (err) {
          finish(new DnsError("NETWORK", `Cannot send to ${ex.address} port ${ex.port}`, { cause: err }));
        }
      });
    });
  });
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new DnsError("BADRESPONSE", "Connection closed before the whole response");
    at += got;
  }
  return out;
}

/** One query over a new TCP connection; rejects with DnsError TIMEOUT, NETWORK or BADRESPONSE. */
export async function tcpExchange(query: Uint8Array, ex: Exchange): Promise<WireMessage> {
  if (ex.signal?.aborted) throw ex.signal.reason;
  let conn: Deno.Conn | undefined;
  let over = false;
  const close = () => {
    try {
      conn?.close();
    } catch { /* already closed */ }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort = () => {};
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new DnsError("TIMEOUT", `No answer over TCP from ${ex.address} port ${ex.port} for ${ex.label}`),
        ),
      ex.timeout,
    );
    onAbort = () => reject(ex.signal!.reason);
    ex.signal?.addEventListener("abort", onAbort, { once: true });
  });
  const work = async (): Promise<WireMessage> => {
    try {
      conn = await Deno.connect({ hostname: ex.address, port: ex.port, transport: "tcp" });
      if (over) close();
      const framed = new Uint8Array(query.length + 2);
      new DataView(framed.buffer).setUint16(0, query.length);
      framed.set(query, 2);
      for (let at = 0; at < framed.length;) at += await conn.write(framed.subarray(at));
      const len = new DataView((await readExactly(conn, 2)).buffer).getUint16(0);
      const msg = decodeMessage(await readExactly(conn, len));
      if (!msg || msg.type !== "response" || !ex.matches(msg)) {
        throw new DnsError("BADRESPONSE", `Response over TCP from ${ex.address} does not answer ${ex.label}`);
      }
      return msg;
    } catch (err) {
      if (err instanceof DnsError) throw err;
      throw new DnsError("NETWORK", `TCP error with ${ex.address} port ${ex.port} for ${ex.label}`, {
        cause: err,
      });
    }
  };
  const attempt = work();
  attempt.catch(() => {}); // after a timeout its rejection is nobody's business
  try {
    return await Promise.race([attempt, deadline]);
  } finally {
    over = true;
    clearTimeout(timer);
    ex.signal?.removeEventListener("abort", onAbort);
    close();
  }
}
