/** `GET /metrics`: Prometheus text format. No token needed (scrapers rarely carry one; it shows no addresses). */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";

/** Registers the route. */
export function metricsRoute(app: Hono, deps: AdminDeps): void {
  app.get("/metrics", async (c) => {
    const body = await deps.metrics.text();
    return c.body(body, 200, { "Content-Type": deps.metrics.contentType });
  });
}
