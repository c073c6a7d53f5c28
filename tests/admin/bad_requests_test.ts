/**
 * The admin listener against bodies it must not read: too large (before any token is asked for: the login
 * form needs none) or not a form where a form is expected. Each gets a 4xx and a log line; nothing is done.
 */

import assert from "node:assert/strict";
import { api, startAdminFerry, stopFerry } from "./_admin.ts";
import { ADMIN_BODY_MAX } from "../../src/admin/app.ts";
import { TOKEN_COOKIE } from "../../src/admin/bearer.ts";
import { sendMessage } from "../helpers/process.ts";

/** A body of `size` octets sent chunked (no Content-Length: the server learns the size only by reading). */
function chunked(size: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= size) return c.close();
      const n = Math.min(64 * 1024, size - sent);
      sent += n;
      c.enqueue(new Uint8Array(n).fill(0x61));
    },
  });
}

Deno.test("admin: a body over ADMIN_BODY_MAX gets 413 before the token is looked at, chunked or not", async () => {
  const f = await startAdminFerry();
  try {
    const login = await fetch(`${f.base}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: chunked(4 * ADMIN_BODY_MAX),
    });
    assert.equal(login.status, 413);
    assert.deepEqual(await login.json(), { error: `request body over ${ADMIN_BODY_MAX} octets` });

    const big = JSON.stringify({ ids: ["x"], reason: "r".repeat(ADMIN_BODY_MAX) });
    const declared = await api(f, "/api/queue/hold", { method: "POST", raw: big });
    assert.equal(declared.status, 413);
    const anonymous = await api(f, "/api/queue/hold", { method: "POST", raw: big, token: null });
    assert.equal(anonymous.status, 413);
    assert.equal(
      f.memlog.lines.filter((l) =>
        /^admin: POST \/(dashboard\/login|api\/queue\/hold) refused: body over/.test(l.text)
      )
        .length,
      3,
    );

    // A body under the limit is served as before.
    const wrong = await fetch(`${f.base}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: f.base },
      body: `token=${"x".repeat(ADMIN_BODY_MAX - 10)}`,
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  } finally {
    await stopFerry(f);
  }
});

Deno.test("admin: a login or dashboard action whose body is not a form gets 400 and changes nothing", async () => {
  const f = await startAdminFerry();
  try {
    const id = await sendMessage(f.port);
    const login = await fetch(`${f.base}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "multipart/form-data", origin: f.base }, // no boundary
      body: "token=x",
    });
    assert.equal(login.status, 400);
    assert.match(await login.text(), /The form could not be read/);

    const action = await fetch(`${f.base}/dashboard/messages/${id}/hold`, {
      method: "POST",
      headers: {
        cookie: `${TOKEN_COOKIE}=${f.adminToken}`,
        origin: f.base,
        "content-type": "multipart/form-data", // no boundary
      },
      body: "reason=x",
      redirect: "manual",
    });
    assert.equal(action.status, 400);
    assert.match(await action.text(), /nothing was done/);
    const shown = await api(f, `/api/queue/${id}`);
    assert.equal(shown.body.message.state, "incoming", JSON.stringify(shown.body));
    assert.equal(f.memlog.lines.filter((l) => /refused: the body is not a form/.test(l.text)).length, 2);
  } finally {
    await stopFerry(f);
  }
});
