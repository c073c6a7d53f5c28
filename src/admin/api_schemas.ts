/**
 * The admin API's queue response bodies as Zod schemas: the routes check what they send against them, and
 * clients (tests, scripts) can parse what they receive with the same schemas.
 */

import { z } from "zod";
import { QUEUE_STATES } from "../spool/spool.ts";

/** What a message id (or a listing's `after` cursor, which is one) looks like. */
export const MESSAGE_ID_PATTERN = /^[A-Za-z0-9-]{1,64}$/;

/** A message id in a request. */
export const messageId = z.string().regex(MESSAGE_ID_PATTERN, "not a message id");

/** The longest reason an operator may give for an action on the queue (logged; a bounce reports it). */
export const REASON_MAX = 500;
/** An operator's reason for an action on the queue. */
export const operatorReason = z.string().min(1).max(REASON_MAX);

/** A queue state name. */
export const queueState = z.enum(QUEUE_STATES as [string, ...string[]]);

/** A message as listings show it. */
export const queueItemSchema = z.object({
  id: z.string(),
  state: queueState,
  sender: z.string(),
  recipients: z.array(z.string()),
  pending: z.number().int().min(0),
  size: z.number().int().min(0),
  receivedAt: z.number(),
  nextAttempt: z.number().optional(),
  reason: z.string().optional(),
}).strict();

/** `GET /api/queue`. */
export const queueListResponse = z.object({
  messages: z.array(queueItemSchema),
  next: z.string().optional(),
}).strict();

/** A `GET /api/queue` answer, as clients (the `queue` command) read it. */
export type QueueListAnswer = z.infer<typeof queueListResponse>;

/** `GET /api/queue/summary`. */
export const queueSummaryResponse = z.object({
  byState: z.record(queueState, z.number().int().min(0)),
  byDomain: z.array(
    z.object({
      domain: z.string(),
      messages: z.number().int().min(0),
      recipients: z.number().int().min(0),
    }).strict(),
  ),
}).strict();

const recipientSchema = z.object({
  address: z.string(),
  status: z.enum(["pending", "delivered", "failed"]),
  attempts: z.number().int().min(0).optional(),
  lastError: z.string().optional(),
  nextAttempt: z.number().optional(),
  extra: z.record(z.string(), z.unknown()).optional(),
}).loose();

/** `GET /api/queue/:id`. */
export const queueShowResponse = z.object({
  message: queueItemSchema,
  // The envelope carries many optional facts (TLS, AUTH, PROXY, DSN): the ones a client needs are checked.
  envelope: z.object({
    id: z.string(),
    sender: z.string(),
    receivedAt: z.number(),
    client: z.object({ ip: z.string() }).loose(),
    recipients: z.array(recipientSchema).min(1),
  }).loose(),
  history: z.array(z.object({ at: z.number(), text: z.string() }).strict()),
  headers: z.string().optional(),
  headersError: z.string().optional(),
}).strict();

/** A `GET /api/queue/:id` answer, as clients (the `queue` command) read it. */
export type QueueShowAnswer = z.infer<typeof queueShowResponse>;
