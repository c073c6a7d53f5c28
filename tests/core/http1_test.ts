import assert from "node:assert/strict";
import { Http1FramingError, responseBody, splitResponse } from "../../src/core/http1.ts";
import { concatBytes } from "../../src/core/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const split = (text: string) => splitResponse(enc.encode(text));

Deno.test("splitResponse() reads the status line and fields (lower-cased, the last of a repeat); no end of header section is undefined", () => {
  const res = split(
    "HTTP/1.1 404 Not Found\r\nContent-Type: a\r\ncontent-type:  text/plain \r\nX: 1\r\n\r\nbody",
  )!;
  assert.equal(res.status, 404);
  assert.equal(res.statusLine, "HTTP/1.1 404 Not Found");
  assert.deepEqual([...res.headers], [["content-type", "text/plain"], ["x", "1"]]);
  assert.equal(dec.decode(res.rest), "body");
  assert.equal(split("SSH-2.0-x\r\n\r\n")!.status, undefined);
  assert.equal(split("HTTP/1.1 200 OK\r\nX: 1\r\n"), undefined);
});

Deno.test("responseBody() decodes chunked bodies, cuts at Content-Length, and reads to the end without either", () => {
  const chunked = split(
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n",
  )!;
  assert.equal(dec.decode(responseBody(chunked)), "Wikipedia");
  assert.equal(dec.decode(responseBody(split("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef")!)), "abc");
  assert.equal(dec.decode(responseBody(split("HTTP/1.1 200 OK\r\n\r\nto the end")!)), "to the end");
});

Deno.test("responseBody() names the framing that is wrong: a bad or cut chunked body, one shorter than its Content-Length", () => {
  const framing = (text: string) => {
    try {
      responseBody(split(text)!);
    } catch (err) {
      assert.ok(err instanceof Http1FramingError);
      return `${err.framing}: ${err.message}`;
    }
    return "no error";
  };
  const te = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  assert.equal(framing(`${te}zz\r\nab\r\n0\r\n\r\n`), "chunked: bad chunk size");
  assert.equal(framing(`${te}5\r\nab`), "chunked: truncated chunk");
  assert.equal(framing(`${te}2\r\nab\r\n`), "chunked: truncated chunk size");
  assert.equal(framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"), "length: truncated response");
});

Deno.test("concatBytes() joins in order, empty parts included", () => {
  const parts = [[1, 2], [], [3], [4, 5, 6]].map((p) => new Uint8Array(p));
  assert.deepEqual([...concatBytes(parts)], [1, 2, 3, 4, 5, 6]);
  assert.equal(concatBytes([]).length, 0);
});
