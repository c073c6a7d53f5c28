/**
 * Cross-site requests against /api: the dashboard's cookie is not a credential there (a page on another
 * loopback port is "same-site" for SameSite=Strict), and a body that is not `application/json` is 415, so an
 * HTML form can neither authenticate nor shape a request.
 */

import assert from "node:assert/strict";
import { api, queueFerry, stopFerry } from "./_admin.ts";
import { TOKEN_COOKIE } from "../../src/admin/bearer.ts";

Deno.test("admin /api: the dashboard cookie alone is 401, a non-JSON body is 415, the bearer header still works", async () => {
  const f = await queueFerry();
  try {
    const [a, b] = f.ids;
    const cookie = `${TOKEN_COOKIE}=${f.adminToken}`;
    // What a form on http://127.0.0.1:<other port> can send: the cookie, a form body, no Authorization.
    const form = await fetch(`${f.base}/api/queue/${a}/delete`, {
      method: "POST",
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      body: "reason=csrf",
    });
    assert.equal(form.status, 401);
    assert.equal(form.headers.get("www-authenticate"), 'Bearer realm="ferry"');
    assert.equal((await form.json()).error, "missing bearer token");
    const plain = await fetch(`${f.base}/api/queue/${a}/delete`, {
      method: "POST",
      headers: { cookie, "content-type": "text/plain" },
      body: "{}",
    });
    assert.equal(plain.status, 401);
    await plain.body?.cancel();
    const read = await fetch(`${f.base}/api/queue/${a}`, { headers: { cookie } });
    assert.equal(read.status, 401);
    await read.body?.cancel();
    assert.ok(await f.spool.row(a), "the message is still queued");

    // With the bearer header, a body must be JSON.
    const auth = `Bearer ${f.adminToken}`;
    for (
      const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    ) {
      const r = await fetch(`${f.base}/api/queue/${a}/hold`, {
        method: "POST",
        headers: { authorization: auth, "content-type": type },
        body: '{"reason":"x"}',
      });
      assert.equal(r.status, 415, type);
      assert.equal((await r.json()).error, "request body must be application/json");
    }
    const untyped = await fetch(`${f.base}/api/queue/${a}/hold`, {
      method: "POST",
      headers: { authorization: auth },
      body: new TextEncoder().encode('{"reason":"x"}'),
    });
    assert.equal(untyped.status, 415);
    await untyped.body?.cancel();
    assert.notEqual((await f.spool.row(a))?.state, "hold");

    // JSON (with a charset) works, and so does a POST without a body.
    const held = await fetch(`${f.base}/api/queue/${a}/hold`, {
      method: "POST",
      headers: { authorization: auth, "content-type": "application/json; charset=utf-8" },
      body: '{"reason":"checked"}',
    });
    assert.equal(held.status, 200, await held.clone().text());
    assert.equal((await held.json()).state, "hold");
    const noBody = await api(f, `/api/queue/${b}/hold`, { method: "POST" });
    assert.deepEqual([noBody.status, noBody.body.state], [200, "hold"]);

    // The dashboard's cookie is scoped to /dashboard, so browsers do not even send it to /api.
    const login = await fetch(`${f.base}/dashboard/login`, {
      method: "POST",
      headers: { origin: new URL(f.base).origin },
      body: new URLSearchParams({ token: f.adminToken! }),
      redirect: "manual",
    });
    assert.equal(login.status, 303);
    await login.body?.cancel();
    assert.match(login.headers.get("set-cookie") ?? "", /; Path=\/dashboard(;|$)/);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("dashboard: a form posted from another origin is 403 (not a 500), changes nothing and sets no cookie", async () => {
  const f = await queueFerry();
  try {
    const [a] = f.ids;
    const cookie = `${TOKEN_COOKIE}=${f.adminToken}`;
    const form = { "content-type": "application/x-www-form-urlencoded" };
    for (const origin of ["http://evil.example", undefined]) {
      const res = await fetch(`${f.base}/dashboard/messages/${a}/hold`, {
        method: "POST",
        headers: { cookie, ...form, ...(origin ? { origin } : {}) },
        body: "reason=csrf",
        redirect: "manual",
      });
      assert.equal(res.status, 403, `action with Origin ${origin}`);
      await res.body?.cancel();
      const login = await fetch(`${f.base}/dashboard/login`, {
        method: "POST",
        headers: { ...form, ...(origin ? { origin } : {}) },
        body: `token=${f.adminToken}`,
        redirect: "manual",
      });
      assert.equal(login.status, 403, `login with Origin ${origin}`);
      assert.equal(login.headers.get("set-cookie"), null);
      await login.body?.cancel();
    }
    assert.equal((await f.spool.row(a))?.state, "deferred", "not held");
    assert.ok(!f.memlog.lines.some((l) => /admin: POST .* failed/.test(l.text)), "no internal error logged");
    // From the dashboard's own origin both work.
    const own = { ...form, origin: new URL(f.base).origin };
    const login = await fetch(`${f.base}/dashboard/login`, {
      method: "POST",
      headers: own,
      body: `token=${f.adminToken}`,
      redirect: "manual",
    });
    assert.equal(login.status, 303);
    assert.match(login.headers.get("set-cookie") ?? "", /HttpOnly/);
    await login.body?.cancel();
    const held = await fetch(`${f.base}/dashboard/messages/${a}/hold`, {
      method: "POST",
      headers: { cookie, ...own },
      body: "reason=ok",
      redirect: "manual",
    });
    assert.equal(held.status, 303);
    await held.body?.cancel();
    assert.equal((await f.spool.row(a))?.state, "hold");
  } finally {
    await stopFerry(f);
  }
});
