/**
 * Test helpers for DANE (RFC 7672) against real peers: the SHA-256 of a certificate's SPKI for TLSA 3 1 1,
 * Postfix's `posttls-finger -l dane` as a second opinion (unbound as the system resolver in a private mount
 * namespace), and a TCP tap that passes an SMTP session through to a real MX and records the extensions of
 * the TLS ClientHello sent after STARTTLS (e.g. status_request, 5: whether the client asked for OCSP); and
 * one message sent through a Ferry with its outcome and events, printed beside posttls-finger's verdict.
 */

import type { FerryConfig } from "../../mod.ts";
import type { FerryEvents } from "../../src/events/types.ts";
import { firstOutcome, startFerryIn, submit } from "./downstream.ts";

const dec = new TextDecoder();

/** Lower-case hex SHA-256 of `data`. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>)).toHex();
}

/** The DER SubjectPublicKeyInfo of the certificate in `certFile` (PEM). */
export async function spkiDer(certFile: string): Promise<Uint8Array> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `openssl x509 -in "${certFile}" -pubkey -noout | openssl pkey -pubin -outform DER`],
    stdout: "piped",
  }).output();
  return out.stdout;
}

/** Lower-case hex SHA-256 of the certificate's SubjectPublicKeyInfo (a TLSA `3 1 1` record's data). */
export async function spkiSha256(certFile: string): Promise<string> {
  return await sha256Hex(await spkiDer(certFile));
}

/** A private directory with a main.cf that makes posttls-finger a DANE client. */
export async function fingerConfigDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-finger-" });
  await Deno.writeTextFile(
    `${dir}/main.cf`,
    "compatibility_level = 3.6\nsmtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n" +
      "dnssec_probe =\n",
  );
  return dir;
}

/**
 * Runs `posttls-finger -l dane` for `domain:port` with the resolver at `resolverIp` (port 53) as the system
 * resolver (bind-mounted resolv.conf in a private mount namespace); returns its verdict in one word
 * (verified, untrusted, anonymous, trusted, no-starttls) or `other: <its last lines>`.
 */
export async function postfixVerdict(
  domain: string,
  port: number,
  resolverIp: string,
  configDir: string,
): Promise<string> {
  const rc = `${configDir}/resolv.conf`;
  const cmd = `mount --bind ${rc} /etc/resolv.conf && exec posttls-finger -c -l dane -P /dev/null ` +
    `${domain}:${port}`;
  await Deno.writeTextFile(rc, `nameserver ${resolverIp}\noptions trust-ad\n`);
  const out = await new Deno.Command("unshare", {
    args: ["-m", "sh", "-c", cmd],
    env: { MAIL_CONFIG: configDir },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  if (/Verified TLS connection established/.test(text)) return "verified";
  if (/Untrusted TLS connection established/.test(text)) return "untrusted";
  if (/Anonymous TLS connection established/.test(text)) return "anonymous";
  if (/Trusted TLS connection established/.test(text)) return "trusted";
  if (/STARTTLS/i.test(text) && /not (offered|supported)|no STARTTLS/i.test(text)) return "no-starttls";
  // With -c it logs only TLS: a clean exit without a word means it met no STARTTLS and quit.
  if (out.success && text.trim() === "") return "no-starttls";
  return `other: ${text.trim().split("\n").slice(-2).join(" | ")}`;
}

/** The extension types of a TLS ClientHello record (RFC 8446 §4.1.2), or undefined if `b` is not one yet. */
export function clientHelloExtensions(b: Uint8Array): number[] | undefined {
  if (b.length < 5 || b[0] !== 0x16) return undefined;
  const recordLen = (b[3] << 8) | b[4];
  if (b.length < 5 + recordLen) return undefined;
  let i = 5;
  if (b[i] !== 1) throw new Error("not a ClientHello");
  i += 4 + 2 + 32; // handshake header, legacy_version, random
  i += 1 + b[i]; // session id
  i += 2 + ((b[i] << 8) | b[i + 1]); // cipher suites
  i += 1 + b[i]; // compression methods
  const end = i + 2 + ((b[i] << 8) | b[i + 1]);
  i += 2;
  const types: number[] = [];
  while (i + 4 <= end) {
    types.push((b[i] << 8) | b[i + 1]);
    i += 4 + ((b[i + 2] << 8) | b[i + 3]);
  }
  return types;
}

/** A running ClientHello tap. */
export interface HelloTap {
  port: number;
  /** The extension types of every ClientHello seen after STARTTLS, one list per session, in order */
  hellos: number[][];
  stop(): Promise<void>;
}

/** TLS extension type status_request (RFC 6066 §8): the client asks for a stapled OCSP response. */
export const STATUS_REQUEST = 5;

/** Listens on a free loopback port and relays every connection to 127.0.0.1:`targetPort`. */
export function startHelloTap(targetPort: number): HelloTap {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hellos: number[][] = [];
  const conns = new Set<Deno.Conn>();
  const sessions = new Set<Promise<void>>();
  const pump = async (from: Deno.Conn, to: Deno.Conn, watch?: (b: Uint8Array) => void) => {
    const buf = new Uint8Array(16384);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        watch?.(buf.subarray(0, n));
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch { /* either side closed */ }
    try {
      to.closeWrite();
    } catch { /* already closed */ }
  };
  const session = async (client: Deno.Conn) => {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
    } catch {
      client.close();
      return;
    }
    conns.add(client).add(server);
    // Client bytes: SMTP text up to STARTTLS, then the ClientHello.
    let seen = new Uint8Array(0);
    let after = -1;
    let done = false;
    const watch = (chunk: Uint8Array) => {
      if (done) return;
      const next = new Uint8Array(seen.length + chunk.length);
      next.set(seen);
      next.set(chunk, seen.length);
      seen = next;
      if (after < 0) {
        const m = /STARTTLS\r\n/i.exec(dec.decode(seen));
        if (!m) return;
        after = m.index + m[0].length;
      }
      const ext = clientHelloExtensions(seen.subarray(after));
      if (ext) {
        hellos.push(ext);
        done = true;
      }
    };
    await Promise.all([pump(client, server, watch), pump(server, client)]);
    for (const c of [client, server]) {
      conns.delete(c);
      try {
        c.close();
      } catch { /* closed */ }
    }
  };
  const accepting = (async () => {
    for await (const c of listener) {
      const s = session(c);
      sessions.add(s);
      s.finally(() => sessions.delete(s));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    hellos,
    async stop() {
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.all(sessions);
    },
  };
}

/** A running UDP DNS forwarder that drops chosen query types. */
export interface DroppingForwarder {
  port: number;
  /** Queries dropped so far ("name TYPE") */
  dropped: string[];
  stop(): Promise<void>;
}

const QTYPES: Record<string, number> = { A: 1, MX: 15, TXT: 16, AAAA: 28, TLSA: 52 };

/**
 * A UDP DNS forwarder on a free loopback port: queries go to the resolver at 127.0.0.1:`upstreamPort` and
 * its answers come back unchanged, except queries of the `drop` types, which get no answer at all (as a
 * lost packet or a dead authoritative server looks to the client: a timeout).
 */
export async function startDroppingForwarder(
  upstreamPort: number,
  drop: string[],
): Promise<DroppingForwarder> {
  const dgram = await import("node:dgram");
  const dropTypes = new Set(drop.map((t) => QTYPES[t]));
  const names = Object.fromEntries(Object.entries(QTYPES).map(([k, v]) => [v, k]));
  const dropped: string[] = [];
  const server = dgram.createSocket("udp4");
  const pending = new Map<ReturnType<typeof dgram.createSocket>, ReturnType<typeof setTimeout>>();
  server.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
    // Question: labels from offset 12 up to a zero byte, then QTYPE.
    let i = 12;
    const labels: string[] = [];
    while (i < msg.length && msg[i] !== 0) {
      labels.push(dec.decode(msg.subarray(i + 1, i + 1 + msg[i])));
      i += 1 + msg[i];
    }
    const qtype = (msg[i + 1] << 8) | msg[i + 2];
    if (dropTypes.has(qtype)) {
      dropped.push(`${labels.join(".")} ${names[qtype]}`);
      return;
    }
    const up = dgram.createSocket("udp4");
    const done = () => {
      clearTimeout(pending.get(up));
      if (pending.delete(up)) up.close();
    };
    pending.set(up, setTimeout(done, 5000));
    up.on("message", (answer: Uint8Array) => {
      server.send(answer, rinfo.port, rinfo.address);
      done();
    });
    up.send(msg, upstreamPort, "127.0.0.1");
  });
  await new Promise<void>((resolve) => server.bind(0, "127.0.0.1", () => resolve()));
  return {
    port: server.address().port,
    dropped,
    async stop() {
      for (const [s, timer] of pending) {
        clearTimeout(timer);
        s.close();
      }
      pending.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** What became of one message in {@link sendOne}. */
export interface DaneOutcome {
  /** Its `=>` line, or else its first `==` line */
  line: string;
  kind: "=>" | "==";
  /** Messages still in Ferry's spool when the outcome was logged */
  queued: number;
  delivery?: FerryEvents["msg:delivery"];
  defer?: FerryEvents["msg:host:defer"];
  daneFail: number;
}

/**
 * Starts a Ferry on `config` (its outcome events recorded), sends one message to user@`domain`, waits for a
 * delivery or a deferral, and returns it.
 */
export async function sendOne(config: FerryConfig, domain: string): Promise<DaneOutcome> {
  const seen: Omit<DaneOutcome, "line" | "kind" | "queued"> = { daneFail: 0 };
  const up = await startFerryIn({
    ...config,
    events: {
      "msg:delivery": (p) => void (seen.delivery = p),
      "msg:host:defer": (p) => void (seen.defer ??= p),
      "dane:fail": () => void seen.daneFail++,
    },
  });
  try {
    await submit(up.port, [`user@${domain}`]);
    const line = await firstOutcome(up.memlog, 15_000, `an outcome for ${domain}`);
    const queued = await up.spool.count();
    return { ...seen, line, kind: line.startsWith("=>") ? "=>" : "==", queued };
  } finally {
    await up.dispose();
  }
}

/** Prints Ferry's line for `domain` beside `posttls-finger -l dane`'s verdict; returns the verdict. */
export async function sideBySide(
  finger: { resolverIp: string; fingerDir: string },
  domain: string,
  port: number,
  ferry: DaneOutcome,
): Promise<string> {
  const pf = await postfixVerdict(domain, port, finger.resolverIp, finger.fingerDir);
  console.log(`${domain.padEnd(16)} Ferry: ${ferry.line.replace(/ C=".*$/, "").slice(0, 160)}`);
  console.log(`${"".padEnd(16)} posttls-finger -l dane: ${pf}`);
  return pf;
}
