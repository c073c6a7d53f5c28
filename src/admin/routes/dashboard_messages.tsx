/** @jsxImportSource hono/jsx */
/** `GET /dashboard/messages`: the message list with filters and, per message, its actions (each confirmed). */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { Layout, when } from "../dashboard/layout.tsx";
import type { QueueItem } from "../queue_access.ts";
import { MESSAGE_ID_PATTERN } from "../api_schemas.ts";

/** The action buttons that fit a message's state; each leads to a confirmation page. */
export function ActionLinks(props: { item: QueueItem; enabled: boolean }) {
  if (!props.enabled) return <span class="muted">—</span>;
  const { id, state } = props.item;
  const acts = state === "hold" ? ["release", "bounce", "delete"] : ["hold", "retry", "bounce", "delete"];
  return (
    <span>
      {acts.map((a) => (
        <a
          class={`btn${a === "delete" || a === "bounce" ? " danger" : ""}`}
          id={`${a}-${id}`}
          href={`/dashboard/messages/${id}/${a}`}
        >
          {a}
        </a>
      ))}
    </span>
  );
}

const ID = MESSAGE_ID_PATTERN;

/** What the action just done did (after delete and bounce the message is no longer listed). */
function doneNotice(done?: string, id?: string, report?: string) {
  if (!id || !ID.test(id)) return null;
  if (done === "delete") return <p class="notice" id="notice">Deleted {id}; no report was sent.</p>;
  if (done !== "bounce") return null;
  return (
    <p class="notice" id="notice">
      Bounced {id}
      {report && ID.test(report)
        ? (
          <span>
            ; failure report <a id="report-link" href={`/dashboard/messages/${report}`}>{report}</a>{" "}
            queued to the sender.
          </span>
        )
        : "; no failure report (none was asked for)."}
    </p>
  );
}

/** Registers the route. */
export function dashboardMessagesRoute(app: Hono, deps: AdminDeps): void {
  app.get("/dashboard/messages", async (c) => {
    const q = c.req.query();
    const notice = doneNotice(q.done, q.id, q.report);
    const { done: _d, id: _i, report: _r, ...kept } = q;
    const filter = {
      state: /^[a-z]+$/.test(q.state ?? "") ? q.state : undefined,
      sender: q.sender || undefined,
      recipient: q.recipient || undefined,
      domain: q.domain || undefined,
      after: ID.test(q.after ?? "") ? q.after : undefined,
      limit: 100,
    };
    const items = await deps.queue.list(filter);
    const states = Object.keys((await deps.queue.summary()).byState);
    const next = items.length === filter.limit ? items[items.length - 1].id : undefined;
    return c.html(
      <Layout title="Messages" hostname={deps.hostname}>
        <form method="get" action="/dashboard/messages">
          <select name="state">
            <option value="">any state</option>
            {states.map((s) => <option key={s} value={s} selected={s === filter.state}>{s}</option>)}
          </select>{" "}
          <input name="sender" placeholder="sender" value={filter.sender ?? ""} />{" "}
          <input name="recipient" placeholder="recipient" value={filter.recipient ?? ""} />{" "}
          <input name="domain" placeholder="recipient domain" value={filter.domain ?? ""} />{" "}
          <button class="btn" type="submit">Filter</button>
        </form>
        {notice}
        <p class="muted">{items.length} shown</p>
        <table id="messages">
          <thead>
            <tr>
              <th>id</th>
              <th>state</th>
              <th>from</th>
              <th>to</th>
              <th>received</th>
              <th>next attempt</th>
              <th>actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((m) => (
              <tr id={`row-${m.id}`}>
                <td>
                  <a href={`/dashboard/messages/${m.id}`}>{m.id}</a>
                </td>
                <td>
                  <span class={`state state-${m.state}`}>{m.state}</span>
                </td>
                <td>{m.sender || "<>"}</td>
                <td>
                  {m.recipients.slice(0, 3).join(", ")}
                  {m.recipients.length > 3 ? ` (+${m.recipients.length - 3})` : ""}
                </td>
                <td>{when(m.receivedAt)}</td>
                <td>{when(m.nextAttempt)}</td>
                <td>
                  <ActionLinks item={m} enabled={deps.queue.actions} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {next
          ? (
            <p>
              <a href={`/dashboard/messages?${new URLSearchParams({ ...kept, after: next })}`}>next page</a>
            </p>
          )
          : null}
      </Layout>,
    );
  });
}
