/**
 * `POST /api/queue/:id/{hold,release,retry,bounce,delete}` (body `{ "reason"? }`) and `DELETE /api/queue/:id`.
 * 200 `{ ok, id, action, state, message }`; 400 for a bad body; 404 for an unknown id or action; 409 when the message's state does
 * not allow it.
 */

import type { Context, Hono } from "hono";
import { z } from "zod";
import type { AdminDeps } from "../deps.ts";
import { jsonError, readJson, validate } from "../http_error.ts";
import { isQueueAction, type QueueAction } from "../queue_access.ts";
import { operatorReason } from "../api_schemas.ts";

const body = z.object({ reason: operatorReason.optional() }).strict();

async function perform(c: Context, deps: AdminDeps, id: string, action: QueueAction): Promise<Response> {
  const raw = await readJson(c);
  if (raw === undefined) return jsonError(c, 400, "body is not JSON");
  const b = validate(c, body, raw);
  if (!b.ok) return b.response;
  const r = await deps.queue.act(id, action, b.value);
  if (!r.ok) return jsonError(c, r.error === "not-found" ? 404 : 409, r.detail);
  deps.log(`admin: ${action} ${id}${b.value.reason ? ` (${b.value.reason})` : ""}`);
  return c.json({ ok: true, id, action, state: r.state, message: r.message });
}

/** Registers the routes. */
export function queueActionRoute(app: Hono, deps: AdminDeps): void {
  app.post("/api/queue/:id/:action", async (c) => {
    const action = c.req.param("action");
    if (!isQueueAction(action)) return jsonError(c, 404, "no such action");
    return await perform(c, deps, c.req.param("id"), action);
  });
  app.delete("/api/queue/:id", (c) => perform(c, deps, c.req.param("id"), "delete"));
}
