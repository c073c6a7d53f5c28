/** `GET /api/queue/summary`: messages by queue state. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";

/** Registers the route. */
export function queueSummaryRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue/summary", async (c) => c.json({ byState: await deps.queue.summary() }));
}
