/**
 * `GET /api/queue/:id`: one message — queue row, envelope with per-recipient state, history, and its header
 * section as stored (`headers`, or `headersError` when the data cannot be read). 404 when unknown.
 */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { jsonChecked, jsonError } from "../http_error.ts";
import { queueShowResponse } from "../api_schemas.ts";

/** Registers the route. */
export function queueShowRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue/:id", async (c) => {
    const found = await deps.queue.show(c.req.param("id"), { headers: true });
    if (!found) return jsonError(c, 404, "no such message");
    return jsonChecked(c, queueShowResponse, {
      message: found.item,
      envelope: found.envelope,
      history: found.history,
      headers: found.headers,
      headersError: found.headersError,
    });
  });
}
