/**
 * `GET /readyz`: readiness — the spool can take mail (open, its worker alive and not restarting), the SMTP
 * listeners are bound, no stop is under way (else 503, with `spoolError` saying what is wrong with the spool).
 */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";

/** Registers the route. */
export function readyzRoute(app: Hono, deps: AdminDeps): void {
  app.get("/readyz", (c) => {
    const r = deps.readiness;
    const problem = r.spool();
    const ready = problem === undefined && r.listenersBound && !r.stopping;
    return c.json(
      {
        ready,
        spool: problem === undefined,
        ...(problem === undefined ? {} : { spoolError: problem }),
        listeners: r.listenersBound,
        stopping: r.stopping,
      },
      ready ? 200 : 503,
    );
  });
}
