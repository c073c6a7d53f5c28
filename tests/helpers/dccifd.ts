/**
 * Test helper: a scripted dccifd — the one stand-in issue 11 allows, because DCC is not packaged for Debian.
 * It follows DCC's dccif.h byte for byte: it reads an options line, `IP\rNAME`, HELO, sender, recipient
 * lines up to a blank line and the message until the client half-closes, then answers the overall result,
 * one result character per recipient, and (with the `header` option) an X-DCC header.
 * Script: a body containing DCC-REJECT → R for all, DCC-GREY → G, DCC-TEMP → T, DCC-SILENT → no answer;
 * a recipient whose local part starts with "spamtrap" → R for that one and S overall; otherwise A.
 */

/** One request as the stand-in parsed it. */
export interface DccSeen {
  options: string[];
  ip: string;
  hostname: string;
  helo: string;
  sender: string;
  recipients: string[];
  body: string;
}

/** A running stand-in. */
export interface ScriptedDccifd {
  /** `127.0.0.1 PORT` (TCP) or a socket path (unix) */
  address: string;
  seen: DccSeen[];
  stop(): Promise<void>;
}

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Parses a request per dccif.h; throws on anything out of protocol. */
export function parseDccRequest(bytes: Uint8Array): DccSeen {
  const text = dec.decode(bytes);
  const lines: string[] = [];
  let pos = 0;
  const line = () => {
    const nl = text.indexOf("\n", pos);
    if (nl < 0) throw new Error("request ends before the blank line");
    const l = text.slice(pos, nl);
    pos = nl + 1;
    lines.push(l);
    return l;
  };
  const options = line().split(/\s+/).filter(Boolean);
  const known = [
    "spam",
    "body",
    "header",
    "query",
    "grey-off",
    "grey-query",
    "no-reject",
    "log",
    "rcvd-next",
  ];
  for (const o of options) if (!known.includes(o)) throw new Error(`unknown option ${o}`);
  const client = line().split("\r");
  if (client.length !== 2) throw new Error("client line must be IP CR name");
  const helo = line();
  const sender = line();
  const recipients: string[] = [];
  for (let r; (r = line()) !== "";) recipients.push(r.split("\r")[0]);
  if (recipients.length === 0) throw new Error("no recipients");
  return { options, ip: client[0], hostname: client[1], helo, sender, recipients, body: text.slice(pos) };
}

function answer(req: DccSeen): string | undefined {
  if (req.body.includes("DCC-SILENT")) return undefined;
  let overall = "A";
  let per: string[] = req.recipients.map((r) => (r.toLowerCase().startsWith("spamtrap") ? "R" : "A"));
  if (per.includes("R")) overall = per.includes("A") ? "S" : "R";
  if (req.body.includes("DCC-REJECT")) [overall, per] = ["R", per.map(() => "R")];
  if (req.body.includes("DCC-GREY")) [overall, per] = ["G", per.map(() => "G")];
  if (req.body.includes("DCC-TEMP")) [overall, per] = ["T", per.map(() => "G")];
  let out = `${overall}\n${per.join("")}\n`;
  if (req.options.includes("header")) {
    out += `X-DCC-Ferry-Test-Metrics: dccifd.test 1234; bulk\n\tBody=${
      overall === "R" ? "many" : "1"
    } Fuz1=1\n`;
  }
  return out;
}

/** Starts the stand-in on TCP loopback, or on a unix socket when `unix` names a path. */
export function startScriptedDccifd(opts: { unix?: string } = {}): ScriptedDccifd {
  const listener = opts.unix
    ? Deno.listen({ transport: "unix", path: opts.unix })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const address = opts.unix ?? `127.0.0.1 ${(listener.addr as Deno.NetAddr).port}`;
  const seen: DccSeen[] = [];
  const open = new Set<Deno.Conn>();
  const serve = async (conn: Deno.Conn) => {
    open.add(conn);
    try {
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(16384);
      for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
      const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
      let off = 0;
      for (const c of chunks) all.set(c, (off += c.length) - c.length);
      const req = parseDccRequest(all);
      seen.push(req);
      const reply = answer(req);
      if (reply === undefined) return await new Promise(() => {}); // hold the connection: a hung dccifd
      await conn.write(enc.encode(reply));
    } catch {
      /* a broken request gets no answer */
    } finally {
      open.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const accepting = (async () => {
    try {
      for await (const c of listener) serve(c);
    } catch { /* closed */ }
  })();
  return {
    address,
    seen,
    async stop() {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
      if (opts.unix) await Deno.remove(opts.unix).catch(() => {});
    },
  };
}
