/** `GET /api/queue/summary`: messages by queue state, and pending messages and recipients by destination domain. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";

/** Registers the route. */
export function queueSummaryRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue/summary", async (c) => {
    const s = await deps.queue.summary();
    return c.json({ byState: s.byState, byDomain: s.byDomain });
  });
}
