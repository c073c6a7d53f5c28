/** `GET /readyz`: readiness — the spool is open, the SMTP listeners are bound, no stop is under way (else 503). */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";

/** Registers the route. */
export function readyzRoute(app: Hono, deps: AdminDeps): void {
  app.get("/readyz", (c) => {
    const r = deps.readiness;
    const ready = r.spoolOpen && r.listenersBound && !r.stopping;
    return c.json(
      { ready, spool: r.spoolOpen, listeners: r.listenersBound, stopping: r.stopping },
      ready ? 200 : 503,
    );
  });
}
