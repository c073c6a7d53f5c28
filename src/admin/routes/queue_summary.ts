/** `GET /api/queue/summary`: messages by queue state, and pending messages and recipients by destination domain. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { jsonChecked } from "../http_error.ts";
import { queueSummaryResponse } from "../api_schemas.ts";

/** Registers the route. */
export function queueSummaryRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue/summary", async (c) => {
    const s = await deps.queue.summary();
    return jsonChecked(c, queueSummaryResponse, { byState: s.byState, byDomain: s.byDomain });
  });
}
