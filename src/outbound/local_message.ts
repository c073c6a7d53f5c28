/**
 * Queues a message Ferry writes itself (an aggregate DMARC report, a TLS-RPT report) for one recipient:
 * stored in the spool like received mail, logged with `<=` as Exim logs locally submitted messages
 * (`U=ferry P=local`), then handed to the queue manager.
 */

import type { Envelope } from "../core/envelope.ts";
import type { Logger } from "../core/log.ts";
import type { Spool } from "../spool/spool.ts";

/** Where and how a locally made message is queued. */
export interface LocalMessage {
  spool: Spool;
  log: Logger;
  /** Our host name (`receivedBy`) */
  hostname: string;
  /** Envelope sender */
  sender: string;
  /** The one recipient */
  to: string;
  /** The whole message (header and body) */
  data: Uint8Array;
  /** What it is, kept as the delivery kind and shown in the log line */
  kind: string;
  /** Wakes the queue manager for the new id */
  enqueue(id: string): void;
}

/** The envelope of a message Ferry writes itself, for one recipient (protocol local, from 127.0.0.1). */
function localEnvelope(f: {
  id: string;
  sender: string;
  to: string;
  size: number;
  receivedAt: number;
  hostname: string;
  delivery: Record<string, unknown>;
  requireTls?: boolean;
}): Envelope {
  return {
    id: f.id,
    sender: f.sender,
    recipients: [{ address: f.to, status: "pending" }],
    size: f.size,
    receivedAt: f.receivedAt,
    protocol: "local",
    client: { ip: "127.0.0.1", port: 0 },
    receivedBy: f.hostname,
    delivery: f.delivery,
    ...(f.requireTls ? { requireTls: true } : {}),
  };
}

/**
 * The envelope of a delivery report (RFC 3464) on `original`, to its sender from the null sender. The report
 * on a REQUIRETLS message is itself sent with REQUIRETLS (RFC 8689 §5).
 */
export function reportEnvelope(
  f: { id: string; original: Envelope; kind: string; size: number; receivedAt: number; hostname: string },
): Envelope {
  return localEnvelope({
    id: f.id,
    sender: "",
    to: f.original.sender,
    size: f.size,
    receivedAt: f.receivedAt,
    hostname: f.hostname,
    delivery: { reportFor: f.original.id, kind: f.kind },
    requireTls: f.original.requireTls === true,
  });
}

/** Stores the message durably, logs it, enqueues it; resolves to its id. */
export async function queueLocalMessage(m: LocalMessage): Promise<string> {
  const id = m.spool.newId();
  const env = localEnvelope({
    id,
    sender: m.sender,
    to: m.to,
    size: m.data.length,
    receivedAt: Date.now(),
    hostname: m.hostname,
    delivery: { kind: m.kind },
  });
  await m.spool.store(env, m.data);
  m.log.write(`<= ${m.sender} U=ferry P=local S=${m.data.length} for ${m.to} (${m.kind})`, {
    id,
    event: "<=",
  });
  m.enqueue(id);
  return id;
}
