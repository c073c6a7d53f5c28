/** What the admin app reaches: metrics, readiness, the effective config, the spool and the queue. */

import type { FerryMetrics } from "./metrics.ts";
import type { Spool } from "../spool/spool.ts";
import type { QueueAccess } from "./queue_access.ts";
import type { Activity } from "./activity.ts";

/** Readiness facts the composition root keeps current. */
export interface Readiness {
  /** Why the spool cannot take mail now (closed, its worker failed for good or restarting); undefined when it can */
  spool(): string | undefined;
  listenersBound: boolean;
  stopping: boolean;
}

/** The admin app's dependencies. */
export interface AdminDeps {
  metrics: FerryMetrics;
  readiness: Readiness;
  /** The effective configuration, secrets already redacted */
  config: unknown;
  spool: Spool;
  queue: QueueAccess;
  activity: Activity;
  /** Our host name, for page titles */
  hostname: string;
  /** Accepted bearer tokens */
  tokens: string[];
  log(text: string): void;
}
