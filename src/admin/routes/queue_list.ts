/** `GET /api/queue`: one page of messages, filtered by state, sender, recipient or domain; `next` pages on. */

import type { Hono } from "hono";
import { z } from "zod";
import type { AdminDeps } from "../deps.ts";
import { validate } from "../http_error.ts";

const query = z.object({
  state: z.string().regex(/^[a-z]+$/).optional(),
  sender: z.string().max(512).optional(),
  recipient: z.string().max(512).optional(),
  domain: z.string().max(255).optional(),
  after: z.string().regex(/^[A-Za-z0-9-]+$/).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
}).strict();

/** Registers the route. */
export function queueListRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue", async (c) => {
    const q = validate(c, query, c.req.query());
    if (!q.ok) return q.response;
    const messages = await deps.queue.list(q.value);
    const next = messages.length === q.value.limit ? messages[messages.length - 1].id : undefined;
    return c.json({ messages, next });
  });
}
