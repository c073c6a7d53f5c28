/** Event names and payloads (Exim's event names where Exim has them). */

import type { Envelope } from "../core/envelope.ts";

/** `msg:received`: a message was accepted and is durable in the spool. */
export interface MsgReceivedEvent {
  id: string;
  envelope: Envelope;
}

/** Every event Ferry fires, by name. */
export interface FerryEvents {
  "msg:received": MsgReceivedEvent;
}

/** The name of an event. */
export type EventName = keyof FerryEvents;

/** A handler for one event; a returned non-empty string is a veto where the event allows one. */
export type EventHandler<K extends EventName> = (payload: FerryEvents[K]) => unknown;

/** The `events` section of the config. */
export type EventHandlers = { [K in EventName]?: EventHandler<K> };
