/** @jsxImportSource hono/jsx */
/**
 * `GET /dashboard/messages/:id/:action` asks for confirmation; `POST` performs it (hold, release, retry, bounce,
 * delete) and returns to the message, or after delete and bounce to the list with a notice naming the failure
 * report a bounce queued. Cross-site posts are refused by Origin.
 */

import type { Hono } from "hono";
import { csrf } from "hono/csrf";
import type { AdminDeps } from "../deps.ts";
import { Layout } from "../dashboard/layout.tsx";
import { isQueueAction } from "../queue_access.ts";
import { REASON_MAX } from "../api_schemas.ts";
import { readForm } from "../http_error.ts";

/** Registers the routes. */
export function dashboardActionRoute(app: Hono, deps: AdminDeps): void {
  app.use("/dashboard/messages/:id/:action", csrf());
  app.get("/dashboard/messages/:id/:action", async (c) => {
    const { id, action } = c.req.param();
    if (!isQueueAction(action)) return c.notFound();
    const found = await deps.queue.show(id);
    if (!found) return c.redirect(`/dashboard/messages/${id}`, 303);
    return c.html(
      <Layout title={`Confirm: ${action} ${id}`} hostname={deps.hostname}>
        <p>
          {action} the message from {found.item.sender || "<>"} to {found.item.recipients.join(", ")}?
        </p>
        <form method="post" action={`/dashboard/messages/${id}/${action}`}>
          {action === "bounce"
            ? (
              <p>
                <label>
                  Reason <input name="reason" size={60} />
                </label>
              </p>
            )
            : null}
          <button
            class={`btn${action === "delete" || action === "bounce" ? " danger" : ""}`}
            id="confirm"
            type="submit"
          >
            Yes, {action}
          </button>{" "}
          <a class="btn" href={`/dashboard/messages/${id}`}>Cancel</a>
        </form>
      </Layout>,
    );
  });
  app.post("/dashboard/messages/:id/:action", async (c) => {
    const { id, action } = c.req.param();
    if (!isQueueAction(action)) return c.notFound();
    const form = await readForm(c);
    if (form === undefined) {
      deps.log(`admin: POST ${c.req.path} refused: the body is not a form`);
      return c.html(
        <Layout title={`Could not ${action} ${id}`} hostname={deps.hostname}>
          <p class="err">The form could not be read; nothing was done.</p>
          <p>
            <a href={`/dashboard/messages/${id}`}>Back to the message</a>
          </p>
        </Layout>,
        400,
      );
    }
    const reason = form.reason?.trim() ? form.reason.trim().slice(0, REASON_MAX) : undefined;
    const r = await deps.queue.act(id, action, { reason });
    if (!r.ok) {
      return c.html(
        <Layout title={`Could not ${action} ${id}`} hostname={deps.hostname}>
          <p class="err">{r.detail}</p>
          <p>
            <a href={`/dashboard/messages/${id}`}>Back to the message</a>
          </p>
        </Layout>,
        r.error === "not-found" ? 404 : 409,
      );
    }
    deps.log(`admin: ${action} ${id} (dashboard)${reason ? ` (${reason})` : ""}`);
    if (action === "delete" || action === "bounce") {
      // The message has left the queue: back to the list, which says what happened.
      const done = new URLSearchParams({ done: action, id, ...(r.report ? { report: r.report } : {}) });
      return c.redirect(`/dashboard/messages?${done}`, 303);
    }
    return c.redirect(`/dashboard/messages/${id}`, 303);
  });
}
