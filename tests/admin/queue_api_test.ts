/** The queue API over real HTTP against a running Ferry with a queue: every operation, 401, 400 and 404. */

import assert from "node:assert/strict";
import { api, queueFerry, waitFor } from "./_admin.ts";
import { queueListResponse, queueShowResponse, queueSummaryResponse } from "../../src/admin/api_schemas.ts";

const ids = (body: unknown) => queueListResponse.parse(body).messages.map((m) => m.id);

/** The text of a failure report as queued. */
const reportText = async (f: { spool: { readData(id: string): Promise<Uint8Array> } }, id: string) =>
  new TextDecoder().decode(await f.spool.readData(id));

Deno.test("queue API: list with filters and paging, summary, show, hold, release, retry, bounce, delete", async () => {
  const f = await queueFerry();
  try {
    const [a, b, c] = f.ids;
    const all = await api(f, "/api/queue");
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.messages.map((m: { id: string }) => m.id), f.ids);
    const queued = all.body.messages[0].state;
    assert.ok(["incoming", "deferred"].includes(queued), queued);
    assert.deepEqual(all.body.messages[0].recipients, ["bob@example.test"]);
    const alice = await api(f, "/api/queue?sender=ALICE@a.test");
    assert.deepEqual(alice.body.messages.map((m: { id: string }) => m.id), [a, c]);
    const page = await api(f, "/api/queue?limit=2");
    assert.equal(page.body.messages.length, 2);
    const page2 = await api(f, `/api/queue?limit=2&after=${page.body.next}`);
    assert.deepEqual(page2.body.messages.map((m: { id: string }) => m.id), [c]);
    const summary = queueSummaryResponse.parse((await api(f, "/api/queue/summary")).body);
    const byState = summary.byState;
    assert.equal(byState.incoming + byState.deferred, 3);
    assert.equal(byState.hold, 0);
    // Age filters combine with the others: all three arrived at or before now.
    assert.deepEqual(ids((await api(f, "/api/queue?olderThan=0s&sender=alice@a.test")).body), [a, c]);

    const shown = await api(f, `/api/queue/${a}`);
    assert.equal(shown.status, 200);
    const view = queueShowResponse.parse(shown.body);
    assert.equal(view.envelope.sender, "alice@a.test");
    assert.equal(view.envelope.recipients[0].status, "pending");
    assert.ok(view.history.length >= 1, "the first attempt is in the history");
    assert.doesNotMatch(view.headers!, /This is a test mailing/, "the header section, without swaks's body");

    const hold = await api(f, `/api/queue/${a}/hold`, { method: "POST", body: { reason: "looks odd" } });
    assert.deepEqual([hold.status, hold.body.state], [200, "hold"]);
    assert.equal((await f.spool.row(a))?.state, "hold");
    assert.equal((await f.spool.row(a))?.reason, "held by operator");
    assert.equal((await api(f, `/api/queue/${a}/hold`, { method: "POST" })).status, 409);
    assert.deepEqual(
      (await api(f, "/api/queue?state=hold")).body.messages.map((m: { id: string }) => m.id),
      [a],
    );
    const release = await api(f, `/api/queue/${a}/release`, { method: "POST" });
    assert.equal(release.status, 200);
    assert.notEqual(release.body.state, "hold");
    assert.notEqual((await f.spool.row(a))?.state, "hold");
    assert.equal((await api(f, `/api/queue/${a}/release`, { method: "POST" })).status, 409);

    const retry = await api(f, `/api/queue/${b}/retry`, { method: "POST" });
    assert.equal(retry.status, 200);
    await waitFor(() => f.memlog.lines.filter((l) => l.text.startsWith("== dave@example.test")).length >= 2);

    await waitFor(async () => (await f.spool.row(c))?.state !== "active");
    const bounce = await api(f, `/api/queue/${c}/bounce`, { method: "POST", body: { reason: "spam run" } });
    assert.deepEqual([bounce.status, bounce.body.state], [200, "bounced"]);
    assert.equal((await api(f, `/api/queue/${c}`)).status, 404);
    assert.ok(f.memlog.has(`admin: bounce ${c} (spam run)`));
    // The failure report to alice is queued as a message from the null sender, with the operator's reason.
    await waitFor(async () => (await f.spool.query({ sender: "" })).length === 1);
    const [report] = await f.spool.query({ sender: "" });
    assert.match(
      await reportText(f, report.id),
      /\r\nDiagnostic-Code: x-ferry; bounced by the administrator: spam run\r\n/,
    );

    await waitFor(async () => (await f.spool.row(b))?.state !== "active");
    const del = await api(f, `/api/queue/${b}`, { method: "DELETE" });
    assert.deepEqual([del.status, del.body.state], [200, "deleted"]);
    assert.equal(await f.spool.get(b), undefined);
    assert.equal((await api(f, `/api/queue/${b}`, { method: "DELETE" })).status, 404);
    assert.ok(f.memlog.has(`admin: hold ${a} (looks odd)`));
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("queue API errors: 401 without or with a wrong token, 400 for bad bodies and queries, 404 for unknown ids and actions", async () => {
  const f = await queueFerry();
  try {
    const [a] = f.ids;
    assert.equal((await api(f, "/api/queue", { token: null })).status, 401);
    assert.equal(
      (await api(f, `/api/queue/${a}/hold`, { method: "POST", token: "wrong-token-wrong-token" })).status,
      401,
    );
    const before = (await f.spool.row(a))?.state;
    assert.notEqual(before, "hold", "nothing changed");

    const notJson = await api(f, `/api/queue/${a}/hold`, { method: "POST", raw: "{nope" });
    assert.deepEqual([notJson.status, notJson.body.error], [400, "body is not JSON"]);
    const badField = await api(f, `/api/queue/${a}/bounce`, { method: "POST", body: { reason: 5 } });
    assert.equal(badField.status, 400);
    assert.equal(badField.body.details[0].path, "reason");
    const extra = await api(f, `/api/queue/${a}/hold`, { method: "POST", body: { force: true } });
    assert.equal(extra.status, 400);
    const badQuery = await api(f, "/api/queue?limit=0");
    assert.equal(badQuery.status, 400);
    assert.equal(badQuery.body.details[0].path, "limit");
    assert.equal((await api(f, "/api/queue?color=red")).status, 400);
    const bogus = await api(f, "/api/queue?state=bogus");
    assert.deepEqual([bogus.status, bogus.body.details[0].path], [400, "state"]);

    assert.equal((await api(f, "/api/queue/1xNOPE-000000000000-0000")).status, 404);
    assert.equal((await api(f, "/api/queue/1xNOPE-000000000000-0000/hold", { method: "POST" })).status, 404);
    const badAction = await api(f, `/api/queue/${a}/explode`, { method: "POST" });
    assert.deepEqual([badAction.status, badAction.body.error], [404, "no such action"]);
    assert.equal((await f.spool.row(a))?.state, before);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("queue API for the queue command: batch actions with an outcome each, flush, age and null-sender filters, headers, summary by domain", async () => {
  const f = await queueFerry();
  try {
    const [a, b, c] = f.ids;
    const summary = await api(f, "/api/queue/summary");
    assert.deepEqual(summary.body.byDomain, [{ domain: "example.test", messages: 3, recipients: 3 }]);

    assert.deepEqual((await api(f, "/api/queue?olderThan=1h")).body.messages, []);
    assert.equal((await api(f, "/api/queue?newerThan=1h")).body.messages.length, 3);
    const badAge = await api(f, "/api/queue?olderThan=soon");
    assert.deepEqual([badAge.status, badAge.body.details[0].path], [400, "olderThan"]);
    assert.equal(badAge.body.details[0].message, "expected a duration such as 90s, 30m, 2h or 1d");
    assert.deepEqual((await api(f, "/api/queue?sender=%3C%3E")).body.messages, []);

    const shown = await api(f, `/api/queue/${a}`);
    assert.match(
      shown.body.headers,
      /^Received: [\s\S]*\r\nSubject: to bob@example\.test\r\n[\s\S]*X-Mailer: swaks[^\r]*\r\n$/,
    );

    const flushed = await api(f, "/api/queue/flush", { method: "POST", body: { domain: "example.test" } });
    assert.deepEqual([flushed.status, flushed.body], [200, { messages: 3 }]);
    assert.ok(f.memlog.has("admin: flush example.test: 3 message(s) due now"));
    assert.deepEqual(
      (await api(f, "/api/queue/flush", { method: "POST", body: { domain: "nowhere.test" } })).body,
      {
        messages: 0,
      },
    );

    // The flush's attempts are over (each failed a second time) before the hold.
    const tries = (u: string) =>
      f.memlog.lines.filter((l) => l.text.startsWith(`== ${u}@example.test`)).length;
    await waitFor(() => ["bob", "dave", "erin"].every((u) => tries(u) >= 2));
    await waitFor(async () => (await f.spool.query({ state: "active" })).length === 0);
    const held = await api(f, "/api/queue/hold", {
      method: "POST",
      body: { ids: [a, "1xNOPE-000000000000-0000"] },
    });
    assert.equal(held.status, 200);
    assert.deepEqual(held.body.results, [
      { id: a, ok: true, message: "held" },
      { id: "1xNOPE-000000000000-0000", ok: false, message: "not in the queue" },
    ]);
    assert.equal((await f.spool.row(a))?.state, "hold");
    assert.ok(f.memlog.has(`admin: hold ${a}`));
    const again = await api(f, "/api/queue/hold", { method: "POST", body: { ids: [a] } });
    assert.deepEqual(again.body.results[0], {
      id: a,
      ok: false,
      message: "is hold, not incoming, deferred or active",
    });

    await waitFor(async () => (await f.spool.query({ state: "active" })).length === 0);
    const bounced = await api(f, "/api/queue/bounce", {
      method: "POST",
      body: { ids: [a, b], reason: "cleanup" },
    });
    assert.equal(bounced.body.results.length, 2);
    for (const r of bounced.body.results) {
      assert.equal(r.ok, true, r.message);
      assert.match(r.message, /^bounced 1 recipient\(s\), failure report \S+ to <(alice|carol)@[ac]\.test>$/);
      // The reason reaches each failure report, as through the single-message route.
      assert.match(
        await reportText(f, r.report),
        /\r\nDiagnostic-Code: x-ferry; bounced by the administrator: cleanup\r\n/,
      );
    }
    assert.ok(f.memlog.has(`admin: bounce ${b} (cleanup)`));
    // Two reports from the null sender are queued.
    assert.equal((await api(f, "/api/queue?sender=%3C%3E")).body.messages.length, 2);
    const del = await api(f, "/api/queue/delete", { method: "POST", body: { ids: [c] } });
    assert.deepEqual(del.body.results, [{ id: c, ok: true, message: "deleted" }]);

    // Bad bodies and actions.
    for (
      const [path, body, field] of [
        ["/api/queue/hold", {}, "ids"],
        ["/api/queue/hold", { ids: [] }, "ids"],
        ["/api/queue/hold", { ids: ["../etc"] }, "ids.0"],
        ["/api/queue/hold", { ids: [a], force: true }, ""],
        ["/api/queue/flush", { domain: "a b" }, "domain"],
        ["/api/queue/flush", { all: true }, ""],
      ] as const
    ) {
      const r = await api(f, path, { method: "POST", body });
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}`);
      assert.equal(r.body.details[0].path, field, JSON.stringify(r.body));
    }
    assert.equal((await api(f, "/api/queue/hold", { method: "POST", raw: "[" })).status, 400);
    assert.equal((await api(f, "/api/queue/explode", { method: "POST", body: { ids: [a] } })).status, 404);
    assert.equal((await api(f, "/api/queue/flush", { method: "POST", token: null })).status, 401);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
