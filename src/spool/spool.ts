/**
 * The spool contract. A message is durable (data and envelope on disk, synced) when `store()` resolves;
 * only then may the SMTP side answer 250. The spool knows nothing of SMTP.
 *
 * Queue states follow Postfix's queues: `incoming` (never tried), `active` (claimed by the queue manager),
 * `deferred` (tried, recipients still pending), `hold` (parked by an operator), `corrupt` (data failed its
 * digest; kept as evidence, never retried). Each message has an indexed `nextAttempt`: the earliest due
 * pending recipient.
 */

import type { Envelope, RecipientStatus } from "../core/envelope.ts";

/** A message's place in the queue. */
export type QueueState = "incoming" | "active" | "deferred" | "hold" | "corrupt";

/** Every queue state, in the order listings show them. */
export const QUEUE_STATES: readonly QueueState[] = ["incoming", "active", "deferred", "hold", "corrupt"];

/** A queued message as listed: its envelope (data is read separately). */
export interface SpoolEntry {
  envelope: Envelope;
}

/** What start-up recovery found. Start-up never reads message bodies: their digests are checked on read. */
export interface RecoveryReport {
  /** Messages in the queue after recovery (any state) */
  queued: number;
  /** Entries moved to the quarantine folder, with the reason (unreadable database, unparseable rows) */
  quarantined: { id: string; reason: string; path: string }[];
  /** Set when the database was converted from an older schema at this start */
  migrated?: { from: number; to: number; messages: number };
}

/** Thrown by `store()` when the message could not be made durable (disk full, I/O error). */
export class SpoolWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SpoolWriteError";
  }
}

/** Thrown by `readData()` when a message's data no longer matches its recorded length and SHA-256. */
export class CorruptMessageError extends Error {
  /** The message id; its queue state is now `corrupt` */
  readonly id: string;
  constructor(id: string, message: string) {
    super(message);
    this.name = "CorruptMessageError";
    this.id = id;
  }
}

/** Thrown when another process already has the spool directory open. */
export class SpoolLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SpoolLockedError";
  }
}

/** The new state of one recipient (by its index in the envelope); absent fields are left as they are. */
export interface RecipientChange {
  index: number;
  status: RecipientStatus;
  attempts?: number;
  /** `null` clears it */
  lastError?: string | null;
  /** `null` clears it */
  nextAttempt?: number | null;
  extra?: Record<string, unknown>;
}

/** A report (DSN) to store as a new message in the same transaction as the states that caused it. */
export interface NewMessage {
  envelope: Envelope;
  data: Uint8Array;
}

/**
 * One atomic change after (part of) a delivery attempt: recipient rows, the outbound state, reports to
 * queue, history lines; then the message's state. Nothing of it is visible unless all of it is.
 */
export interface DeliveryUpdate {
  id: string;
  recipients?: RecipientChange[];
  /** Replaces `envelope.delivery` */
  delivery?: Record<string, unknown>;
  reports?: NewMessage[];
  /** Lines for the message's history (`queue show`) */
  history?: string[];
  /**
   * The state to leave the message in: `deferred`/`incoming` (still pending), or `done` (removed: nothing
   * pending). A message an operator held (or one marked corrupt) meanwhile keeps that state.
   * Omitted: the state is not changed.
   */
  state?: "incoming" | "deferred" | "active" | "done";
}

/** A message's queue row, as listings show it (no body, no full envelope). */
export interface QueueRow {
  id: string;
  state: QueueState;
  /** Earliest due pending recipient (ms since epoch); undefined when none is pending */
  nextAttempt?: number;
  /** When it was received (ms since epoch) */
  receivedAt: number;
  sender: string;
  size: number;
  /** Recipients not yet delivered or failed */
  pending: number;
  recipients: number;
  /** Why it is corrupt or held, when recorded */
  reason?: string;
}

/** Filters and paging of {@link Spool.query}. */
export interface QueueQuery {
  state?: QueueState;
  /** Exact sender address (case-insensitive) */
  sender?: string;
  /** Exact recipient address (case-insensitive) */
  recipient?: string;
  /** Recipient domain (case-insensitive) */
  domain?: string;
  /** Only messages received at or before this time (ms since epoch) */
  receivedBefore?: number;
  /** Only messages received at or after this time (ms since epoch) */
  receivedAfter?: number;
  /** Paging: rows after this id (ids sort by arrival) */
  after?: string;
  /** Rows per page (default 100, at most 10,000) */
  limit?: number;
}

/** Counts by state and by pending recipients' destination domain. */
export interface QueueSummary {
  byState: Record<QueueState, number>;
  /** Domains with pending recipients, most first: messages and recipients */
  byDomain: { domain: string; messages: number; recipients: number }[];
}

/** A claimed message: moved to `active` by {@link Spool.claim}. */
export interface Claimed {
  id: string;
  /** Its state before the claim */
  from: "incoming" | "deferred";
  /**
   * The message's next attempt in the index; earlier than every pending recipient's own when a flush pulled
   * the message forward (then all of its pending recipients are due)
   */
  nextAttempt: number;
  /** The envelope with its recipients' states, read in the claim's own transaction */
  envelope?: Envelope;
  /** The message's data, checked against its digest, when it is at most `dataUpTo` octets */
  data?: Uint8Array;
  /** Why the data failed its check (the message is now `corrupt`, with a log line) */
  corrupt?: string;
}

/** A durable message store. */
export interface Spool {
  /** Opens the store and recovers what it holds; corrupt entries go to quarantine, never crash. */
  open(): Promise<RecoveryReport>;
  /** Why the spool cannot take writes now (closed, failed for good, recovering); undefined when it can */
  problem?(): string | undefined;
  /** Calls `fn` after each group commit with its latency in seconds and the writes it carried (metrics) */
  observeCommits?(fn: (seconds: number, writes: number) => void): void;
  /** A new Exim-style message id, unique across restarts and processes sharing the spool. */
  newId(): string;
  /**
   * Stores a message durably; throws SpoolWriteError when it cannot. With `transfer`, the caller gives
   * `data` up (its buffer may be moved to another thread instead of copied, leaving it empty); `history`
   * lines are stored with it (a deferral decided before the store).
   */
  store(
    envelope: Envelope,
    data: Uint8Array,
    options?: { transfer?: boolean; history?: string[] },
  ): Promise<void>;
  /**
   * Reads a message's data, checked against its recorded length and SHA-256: on a mismatch the message
   * moves to `corrupt` (a log line says so) and CorruptMessageError is thrown.
   */
  readData(id: string): Promise<Uint8Array>;
  /**
   * The first `limit` octets of a message's data (its header section, for operators), reading no more of a
   * large body than that; not checked against the digest. Undefined when there is no such message.
   */
  readHead(id: string, limit: number): Promise<Uint8Array | undefined>;
  /** Reads one envelope with its recipients' current states, or undefined when there is no such message. */
  get(id: string): Promise<Envelope | undefined>;
  /** Lists every queued message (tests and small spools; operators use `query`). */
  list(): Promise<SpoolEntry[]>;
  /** One page of queue rows matching `query`, in arrival order. */
  query(query?: QueueQuery): Promise<QueueRow[]>;
  /** A message's queue row, or undefined. */
  row(id: string): Promise<QueueRow | undefined>;
  /** A message's history lines, oldest first. */
  history(id: string): Promise<{ at: number; text: string }[]>;
  /** Counts by state and by destination domain. */
  summary(): Promise<QueueSummary>;
  /** Durably replaces a queued message's recipient states and outbound state from a whole envelope. */
  update(envelope: Envelope): Promise<void>;
  /** Applies one delivery update atomically; rejects with SpoolWriteError when the message is gone. */
  apply(update: DeliveryUpdate): Promise<void>;
  /**
   * Moves up to `limit` messages due at `now` from `incoming` (first) and `deferred` to `active`, earliest
   * due first, and returns them with their envelopes; with `dataUpTo`, also the (checked) data of each one
   * no larger than that, so a delivery needs no further read.
   */
  claim(now: number, limit: number, options?: { dataUpTo?: number }): Promise<Claimed[]>;
  /** The earliest `nextAttempt` of an `incoming` or `deferred` message, or undefined when there is none. */
  nextDue(): Promise<number | undefined>;
  /**
   * Changes a message's state when it is in one of `from` (any state when omitted); `nextAttempt` also sets
   * every pending recipient's next attempt (retry now). Resolves to whether the message changed.
   */
  setState(
    id: string,
    state: QueueState,
    options?: { from?: QueueState[]; reason?: string; nextAttempt?: number },
  ): Promise<boolean>;
  /**
   * Retry now: makes the pending recipients of queued (`incoming`, `deferred`, `active`) messages due at `at`,
   * for one recipient domain or, without one, the whole queue. Resolves to the number of messages touched.
   */
  retryNow(domain: string | undefined, at: number): Promise<number>;
  /** Removes a message for good (delivery complete, or deleted by an operator). */
  remove(id: string): Promise<void>;
  /** Number of queued messages (every state). */
  count(): Promise<number>;
  /** Flushes and closes. */
  close(): Promise<void>;
}
