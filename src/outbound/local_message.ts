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

/** Stores the message durably, logs it, enqueues it; resolves to its id. */
export async function queueLocalMessage(m: LocalMessage): Promise<string> {
  const id = m.spool.newId();
  const env: Envelope = {
    id,
    sender: m.sender,
    recipients: [{ address: m.to, status: "pending" }],
    size: m.data.length,
    receivedAt: Date.now(),
    protocol: "local",
    client: { ip: "127.0.0.1", port: 0 },
    receivedBy: m.hostname,
    delivery: { kind: m.kind },
  };
  await m.spool.store(env, m.data);
  m.log.write(`<= ${m.sender} U=ferry P=local S=${m.data.length} for ${m.to} (${m.kind})`, {
    id,
    event: "<=",
  });
  m.enqueue(id);
  return id;
}
