/**
 * A bare SMTP acceptor (RFC 5321 subset, RFC 2920 PIPELINING) standing in for Ferry while
 * mod.ts does not exist, so the bench harness can be exercised. Not Ferry and never reported
 * as Ferry: it writes each message to its own file, fsyncs it, then answers 250.
 * Trusts every client (no policy at all); listens where FERRY_PORT says, spools to FERRY_SPOOL.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

async function storeDurably(dir: string, data: Uint8Array): Promise<void> {
  const path = `${dir}/${crypto.randomUUID()}.eml`;
  const f = await Deno.open(path, { write: true, createNew: true });
  try {
    let off = 0;
    while (off < data.length) off += await f.write(data.subarray(off));
    await f.sync();
  } finally {
    f.close();
  }
}

async function session(conn: Deno.Conn, dir: string): Promise<void> {
  const chunk = new Uint8Array(64 * 1024);
  let buf = new Uint8Array(0);
  let inData = false;
  let out = "";
  await writeAll(conn, encoder.encode("220 standin.bench.test ESMTP stand-in\r\n"));
  for (;;) {
    const n = await conn.read(chunk);
    if (n === null) return;
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    for (;;) {
      if (inData) {
        const end = buf.findIndex((_, i) =>
          buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 46 && buf[i + 3] === 13 && buf[i + 4] === 10
        );
        if (end < 0) break;
        await storeDurably(dir, buf.slice(2, end + 2));
        buf = buf.slice(end + 5);
        inData = false;
        out += "250 2.0.0 Ok queued\r\n";
        continue;
      }
      const nl = buf.indexOf(10);
      if (nl < 0) break;
      const line = decoder.decode(buf.subarray(0, nl)).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === "EHLO") out += "250-standin.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
      else if (verb === "HELO" || verb === "MAIL" || verb === "RCPT" || verb === "RSET" || verb === "NOOP") {
        out += "250 2.0.0 Ok\r\n";
      } else if (verb === "DATA") {
        out += "354 End data with <CR><LF>.<CR><LF>\r\n";
        inData = true;
        buf = concatCrlf(buf);
      } else if (verb === "QUIT") {
        await writeAll(conn, encoder.encode(out + "221 2.0.0 Bye\r\n"));
        return;
      } else out += "502 5.5.2 Not implemented\r\n";
    }
    if (out) {
      await writeAll(conn, encoder.encode(out));
      out = "";
    }
  }
}

/** Prefixes CRLF so the end-of-data search also matches an empty body. */
function concatCrlf(buf: Uint8Array): Uint8Array<ArrayBuffer> {
  const next = new Uint8Array(buf.length + 2);
  next.set([13, 10]);
  next.set(buf, 2);
  return next;
}

if (import.meta.main) {
  const port = Number(Deno.env.get("FERRY_PORT"));
  const dir = Deno.env.get("FERRY_SPOOL")!;
  await Deno.mkdir(dir, { recursive: true });
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  for await (const conn of listener) {
    session(conn, dir).catch(() => undefined).finally(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    });
  }
}
