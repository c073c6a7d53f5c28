/**
 * `GET /api/queue`: one page of messages, filtered by state, sender (`<>` for the null sender), recipient,
 * domain or age (`olderThan`, `newerThan`: durations such as `30m`, `2h`); `next` pages on.
 */

import type { Hono } from "hono";
import { z } from "zod";
import type { AdminDeps } from "../deps.ts";
import { jsonChecked, validate } from "../http_error.ts";
import { messageId, queueListResponse, queueState } from "../api_schemas.ts";
import { parseDuration } from "../../core/units.ts";

/** A duration in the query, parsed once into milliseconds. */
const duration = z.string().max(32).transform((s, ctx) => {
  try {
    return parseDuration(s);
  } catch {
    ctx.addIssue({ code: "custom", message: "expected a duration such as 90s, 30m, 2h or 1d" });
    return z.NEVER;
  }
});

const query = z.object({
  state: queueState.optional(),
  sender: z.string().max(512).optional(),
  recipient: z.string().max(512).optional(),
  domain: z.string().max(255).optional(),
  olderThan: duration.optional(),
  newerThan: duration.optional(),
  after: messageId.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
}).strict();

/** Registers the route. */
export function queueListRoute(app: Hono, deps: AdminDeps): void {
  app.get("/api/queue", async (c) => {
    const q = validate(c, query, c.req.query());
    if (!q.ok) return q.response;
    const { olderThan, newerThan, sender, ...rest } = q.value;
    const now = Date.now();
    const messages = await deps.queue.list({
      ...rest,
      sender: sender === "<>" ? "" : sender,
      receivedBefore: olderThan === undefined ? undefined : now - olderThan,
      receivedAfter: newerThan === undefined ? undefined : now - newerThan,
    });
    const next = messages.length === q.value.limit ? messages[messages.length - 1].id : undefined;
    return jsonChecked(c, queueListResponse, { messages, next });
  });
}
