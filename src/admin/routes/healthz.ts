/** `GET /healthz`: liveness — the process answers. No token needed. */

import type { Hono } from "hono";

/** Registers the route. */
export function healthzRoute(app: Hono): void {
  app.get("/healthz", (c) => c.json({ status: "ok" }));
}
