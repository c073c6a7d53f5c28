/**
 * `POST /api/queue/flush` with body `{ "domain"? }`: every queued message (or those with pending recipients
 * at one domain) due now, back-off and connection-failure memory forgotten (`exim -qff`, `postqueue -f`/`-s`).
 * 200 `{ messages }` (how many were made due); 400 for a bad body; 503 while Ferry is still starting.
 */

import type { Hono } from "hono";
import { z } from "zod";
import type { AdminDeps } from "../deps.ts";
import { jsonError, readJson, validate } from "../http_error.ts";

const body = z.object({
  domain: z.string().min(1).max(255).regex(/^[^\s@/]+$/, "not a domain name").optional(),
}).strict();

/** Registers the route (before `POST /api/queue/:action`). */
export function queueFlushRoute(app: Hono, deps: AdminDeps): void {
  app.post("/api/queue/flush", async (c) => {
    const raw = await readJson(c);
    if (raw === undefined) return jsonError(c, 400, "body is not JSON");
    const b = validate(c, body, raw);
    if (!b.ok) return b.response;
    const r = await deps.queue.flush(b.value.domain);
    if (r === undefined) return jsonError(c, 503, "Ferry is still starting");
    deps.log(`admin: flush${b.value.domain ? ` ${b.value.domain}` : ""}: ${r.messages} message(s) due now`);
    return c.json(r);
  });
}
