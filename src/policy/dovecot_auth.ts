/**
 * `auth.check` backed by Dovecot's authentication service, over its auth-client UNIX socket (the protocol
 * Postfix's and Exim's `dovecot` authenticators speak): handshake (`VERSION`, `CPID` / the server's
 * `VERSION`, `MECH` lines … `DONE`), then `AUTH <id> PLAIN service=smtp secured resp=<base64>`, answered
 * `OK` (good), `FAIL` (bad credentials) or `FAIL … temp` / `code=temp_fail` (the lookup failed: this
 * throws, so the client gets 454 4.7.0). One connection per check.
 */

import { errorMessage } from "../core/error_message.ts";

/** Options of {@link dovecotAuth}. */
export interface DovecotAuthOptions {
  /** Path of Dovecot's auth-client socket (e.g. `/var/run/dovecot/auth-client`) */
  socket: string;
  /** `service=` sent to Dovecot (default `smtp`), what its passdb rules may match */
  service?: string;
  /** Milliseconds for the whole exchange before it counts as a lookup failure (default 5000) */
  timeoutMs?: number;
}

/** What the check is asked (the fields of an `auth.check` request it uses). */
export interface DovecotAuthRequest {
  user: string;
  authzid: string;
  password: string;
  client?: { ip: string; port: number };
}

const enc = new TextEncoder();

/** An error of the Dovecot auth exchange: the socket, the protocol, or a temporary failure it reported. */
export class DovecotAuthError extends Error {
  override name = "DovecotAuthError";
}

/** Reads LF-terminated lines from a connection. */
class LineReader {
  #conn: Deno.Conn;
  #buf = "";
  #dec = new TextDecoder();
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }
  async next(): Promise<string> {
    for (;;) {
      const nl = this.#buf.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        return line;
      }
      const chunk = new Uint8Array(4096);
      const n = await this.#conn.read(chunk);
      if (n === null) throw new DovecotAuthError("Dovecot closed the auth connection");
      this.#buf += this.#dec.decode(chunk.subarray(0, n), { stream: true });
      if (this.#buf.length > 65536) throw new DovecotAuthError("Dovecot sent an over-long line");
    }
  }
}

/** A value may not carry the protocol's separators. */
function clean(value: string): string {
  return value.replace(/[\t\n\r\0]/g, "");
}

/** One PLAIN authentication against Dovecot: true when it said OK, false on FAIL; throws on a lookup failure. */
async function ask(
  opts: DovecotAuthOptions,
  req: DovecotAuthRequest,
  held: { conn?: Deno.Conn; timedOut?: boolean },
): Promise<boolean> {
  const conn = await Deno.connect({ transport: "unix", path: opts.socket });
  held.conn = conn;
  if (held.timedOut) conn.close();
  try {
    const lines = new LineReader(conn);
    await conn.write(enc.encode(`VERSION\t1\t2\nCPID\t${Deno.pid}\n`));
    let version = false;
    let plain = false;
    for (;;) {
      const f = (await lines.next()).split("\t");
      if (f[0] === "VERSION") version = f[1] === "1";
      else if (f[0] === "MECH" && f[1]?.toUpperCase() === "PLAIN") plain = true;
      else if (f[0] === "DONE") break;
    }
    if (!version) throw new DovecotAuthError("Dovecot auth protocol is not version 1");
    if (!plain) throw new DovecotAuthError("Dovecot does not offer PLAIN");
    const resp = enc.encode(`${req.authzid}\0${req.user}\0${req.password}`).toBase64();
    const params = [`service=${clean(opts.service ?? "smtp")}`, "secured"];
    if (req.client) params.push(`rip=${clean(req.client.ip)}`);
    await conn.write(enc.encode(`AUTH\t1\tPLAIN\t${params.join("\t")}\tresp=${resp}\n`));
    for (;;) {
      const f = (await lines.next()).split("\t");
      if (f[1] !== "1") continue;
      if (f[0] === "OK") return true;
      if (f[0] === "FAIL") {
        const rest = f.slice(2);
        if (rest.includes("temp") || rest.includes("code=temp_fail")) {
          throw new DovecotAuthError("Dovecot reported a temporary authentication failure");
        }
        return false;
      }
      throw new DovecotAuthError(`Dovecot answered ${f[0]} to a PLAIN response`);
    }
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

/**
 * An `auth.check` function asking Dovecot: `auth: { check: dovecotAuth({ socket: "/run/dovecot/auth-client" }) }`.
 * Resolves true or false; throws (→ 454 4.7.0) when the socket cannot be reached, times out, or Dovecot's
 * lookup failed.
 */
export function dovecotAuth(opts: DovecotAuthOptions): (req: DovecotAuthRequest) => Promise<boolean> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return async function dovecot_auth(req) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const held: { conn?: Deno.Conn; timedOut?: boolean } = {};
    try {
      return await Promise.race([
        ask(opts, req, held),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            // Closing the connection ends the exchange's pending read.
            held.timedOut = true;
            try {
              held.conn?.close();
            } catch { /* already closed */ }
            reject(new DovecotAuthError(`Dovecot auth at ${opts.socket}: no answer in ${timeoutMs} ms`));
          }, timeoutMs);
        }),
      ]);
    } catch (err) {
      if (err instanceof DovecotAuthError) throw err;
      throw new DovecotAuthError(`Dovecot auth at ${opts.socket}: ${errorMessage(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  };
}
