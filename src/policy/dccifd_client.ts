/**
 * A client for dccifd, the DCC (Distributed Checksum Clearinghouses) daemon, over its protocol in DCC's
 * `dccif.h`: the client sends an options line, the client's IP address and name (separated by CR), the HELO
 * name, the envelope sender, one line per recipient, a blank line and the message, then half-closes; dccifd
 * answers an overall result (A accept, R reject, S accept some, G greylist, T temporary failure), one
 * result character per recipient (A, R, G), and, with the `header` option, its X-DCC header.
 * Exim's mapping (experimental DCC support): A and S accept, R and G fail, T defers.
 * TRUSTS: the dccifd named in config.
 */

import { errorMessage } from "../core/error_message.ts";
import { concatBytes } from "../core/bytes.ts";

/** dccifd's overall results. */
export type DccOverall = "A" | "R" | "S" | "G" | "T";
/** dccifd's per-recipient results. */
export type DccRecipientResult = "A" | "R" | "G";

/** What dccifd is told. */
export interface DccRequest {
  /** Options line words (default `["header"]`, which asks for the X-DCC header) */
  options?: readonly string[];
  /** The client's IP address ("" when unknown) */
  ip?: string;
  /** The client's host name */
  hostname?: string;
  helo?: string;
  /** The envelope sender ("" for the null sender, sent as `<>`) */
  sender: string;
  recipients: readonly string[];
  /** The message (CRLF line endings are sent as LF, as dccifd expects a Unix text stream) */
  message: Uint8Array;
}

/** dccifd's answer. */
export interface DccResult {
  overall: DccOverall;
  /** One result a recipient, in request order */
  recipients: DccRecipientResult[];
  /** The X-DCC header dccifd returned (name and unfolded value), when it starts with `X-DCC` */
  header?: [string, string];
}

/** dccifd could not be asked, or its answer does not follow dccif.h. */
export class DccError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DccError";
  }
}

/** Exim's mapping of the overall result: `accept` (A, S), `fail` (R, G) or `defer` (T). */
export function dccOutcome(overall: DccOverall): "accept" | "fail" | "defer" {
  if (overall === "A" || overall === "S") return "accept";
  if (overall === "T") return "defer";
  return "fail";
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Builds the request bytes (pure, so tests can compare them byte for byte). */
export function encodeDccRequest(req: DccRequest): Uint8Array {
  const clean = (s: string) => s.replace(/[\r\n]/g, "");
  const head = [
    (req.options ?? ["header"]).map(clean).join(" "),
    `${clean(req.ip ?? "")}\r${clean(req.hostname ?? "")}`,
    clean(req.helo ?? ""),
    req.sender === "" ? "<>" : clean(req.sender),
    ...req.recipients.map(clean),
    "",
  ].join("\n") + "\n";
  const body = dec.decode(req.message).replace(/\r\n/g, "\n");
  return enc.encode(head + body);
}

/** Reads dccifd's answer. */
export function parseDccReply(text: string, recipients: number): DccResult {
  const lines = text.split("\n");
  const overall = lines[0]?.trim();
  if (!overall || !/^[ARSGT]$/.test(overall)) {
    throw new DccError(`dccifd answered ${JSON.stringify(lines[0] ?? "")} instead of A, R, S, G or T`);
  }
  const per = (lines[1] ?? "").trim();
  if (!/^[ARG]*$/.test(per) || (per.length !== recipients && per.length !== 0)) {
    throw new DccError(
      `dccifd's recipient line ${JSON.stringify(per)} does not match ${recipients} recipient(s)`,
    );
  }
  // Without a line per recipient (a query), each recipient takes the overall result.
  const fallback: DccRecipientResult = overall === "R" ? "R" : overall === "G" || overall === "T" ? "G" : "A";
  const results = per.length ? [...per] as DccRecipientResult[] : Array(recipients).fill(fallback);
  const headerText = lines.slice(2).join("\n").replace(/\n[ \t]+/g, " ").split("\n")[0] ?? "";
  const m = /^(X-DCC[^:\s]*):\s*(.*)$/i.exec(headerText);
  return { overall: overall as DccOverall, recipients: results, header: m ? [m[1], m[2].trim()] : undefined };
}

/** Talks to one dccifd: a unix socket path, or `host port` / `host:port` for TCP. */
export class DccifdClient {
  readonly #address: string;
  readonly #timeoutMs: number;

  constructor(opts: { address: string; timeoutMs: number }) {
    this.#address = opts.address;
    this.#timeoutMs = opts.timeoutMs;
  }

  /** Asks dccifd about one message; throws DccError when it fails or is late. */
  async check(req: DccRequest, opts: { signal?: AbortSignal } = {}): Promise<DccResult> {
    const where = `dccifd ${this.#address}`;
    let conn: Deno.Conn | undefined;
    const abort = AbortSignal.any([
      AbortSignal.timeout(this.#timeoutMs),
      ...(opts.signal ? [opts.signal] : []),
    ]);
    const onAbort = () => {
      try {
        conn?.close();
      } catch { /* closed */ }
    };
    abort.addEventListener("abort", onAbort, { once: true });
    try {
      conn = await this.#connect(abort);
      const bytes = encodeDccRequest(req);
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
      await conn.closeWrite();
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(16384);
      for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
      if (abort.aborted) throw abort.reason;
      const text = dec.decode(concatBytes(chunks));
      return parseDccReply(text, req.recipients.length);
    } catch (err) {
      if (err instanceof DccError) throw err;
      const why = abort.aborted ? `no answer within ${this.#timeoutMs} ms` : errorMessage(err);
      throw new DccError(`${where}: ${why}`, { cause: err });
    } finally {
      abort.removeEventListener("abort", onAbort);
      try {
        conn?.close();
      } catch { /* closed */ }
    }
  }

  async #connect(signal: AbortSignal): Promise<Deno.Conn> {
    const tcp = /^(\S+?)(?:\s+|:)(\d+)$/.exec(this.#address);
    const connecting = tcp && !this.#address.startsWith("/")
      ? Deno.connect({ hostname: tcp[1].replace(/^\[|\]$/g, ""), port: Number(tcp[2]) })
      : Deno.connect({ transport: "unix", path: this.#address });
    const conn = await Promise.race([
      connecting,
      new Promise<never>((_, reject) => {
        if (signal.aborted) reject(signal.reason);
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      }),
    ]).catch((err) => {
      connecting.then((c) => c.close(), () => {});
      throw err;
    });
    return conn;
  }
}
