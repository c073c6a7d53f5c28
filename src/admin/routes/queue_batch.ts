/**
 * `POST /api/queue/{hold,release,retry,bounce,delete}` with body `{ "ids": [...], "reason"? }`: one action on
 * up to 1000 messages, as the `queue` command sends it; the reason is logged, and a bounce gives it in the
 * failure reports as the single-message route does. 200 `{ results: [{ id, ok, message, report? }] }` — a message
 * the action does not fit is `ok: false` with the reason, not an HTTP error; 400 for a bad body; 503 while
 * Ferry is still starting.
 */

import type { Hono } from "hono";
import { z } from "zod";
import type { AdminDeps } from "../deps.ts";
import { jsonError, readJson, validate } from "../http_error.ts";
import { isQueueAction } from "../queue_access.ts";
import { messageId, operatorReason } from "../api_schemas.ts";

/** Message ids as the spool makes them (what an operator mistypes but looks like one is refused by the operation). */
const body = z.object({
  ids: z.array(messageId).min(1).max(1000),
  reason: operatorReason.optional(),
}).strict();

/** Registers the route. */
export function queueBatchRoute(app: Hono, deps: AdminDeps): void {
  app.post("/api/queue/:action", async (c) => {
    const action = c.req.param("action");
    if (!isQueueAction(action)) return jsonError(c, 404, "no such action");
    const raw = await readJson(c);
    if (raw === undefined) return jsonError(c, 400, "body is not JSON");
    const b = validate(c, body, raw);
    if (!b.ok) return b.response;
    const results = await deps.queue.actMany(action, b.value.ids, { reason: b.value.reason });
    if (results === undefined) return jsonError(c, 503, "Ferry is still starting");
    const reason = b.value.reason ? ` (${b.value.reason})` : "";
    for (const r of results) if (r.ok) deps.log(`admin: ${action} ${r.id}${reason}`);
    return c.json({ results });
  });
}
