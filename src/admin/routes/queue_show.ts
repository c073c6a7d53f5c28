/** `GET /api/queue/:id`: one message — queue row, envelope with per-recipient state, history. 404 when unknown. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { jsonError } from "../http_error.ts";

/** Registers the route. */
export function queueShowRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue/:id", async (c) => {
    const found = await deps.queue.show(c.req.param("id"));
    if (!found) return jsonError(c, 404, "no such message");
    return c.json({ message: found.item, envelope: found.envelope, history: found.history });
  });
}
