/**
 * Event names and payloads, with Exim's names and semantics (Exim's "Event actions"). `tcp:connect`,
 * `smtp:connect` and `tls:cert` are vetoable: a handler returning a non-empty string refuses, and so does a
 * handler that throws or runs past its deadline. Every payload carries its event's name (`event`).
 */

import type { Envelope, TlsInfo } from "../core/envelope.ts";
import type { EVENT_NAMES } from "../core/event_names.ts";

/** `msg:received`: a message was accepted and is durable in the spool. */
export interface MsgReceivedEvent {
  id: string;
  envelope: Envelope;
}

/** The outbound connection an event is about. */
export interface HostFacts {
  /** Host name (from the MX or route), or the address literal */
  host: string;
  address: string;
  port: number;
}

/** TLS facts of an outbound connection. */
export interface OutboundTlsFacts extends TlsInfo {
  /** The peer's leaf certificate, DER (Exim's tls_out_peercert) */
  peerCertificate?: Uint8Array;
  /** The whole chain the peer sent, DER, leaf first */
  peerChain: Uint8Array[];
  /** Certificate verification: "yes", "no", or "dane" (Exim's CV=) */
  cv: "yes" | "no" | "dane";
  /** DANE authenticated the peer (Exim's tls_out_dane) */
  dane?: boolean;
  /** Usage of the TLSA record that matched: 2 DANE-TA, 3 DANE-EE */
  tlsaUsage?: number;
}

/** How outbound security judged one delivery: the `TLS=` label and what was required. */
export interface SecurityTrace {
  /** What authenticated the session, or what the failed policy demanded: dane, mta-sts(enforce),
   * mta-sts(testing), pkix, encrypted (encryption was required and reached, unauthenticated), opportunistic,
   * none */
  policy: string;
  /** The required TLS level */
  tlsRequired: "none" | "encrypted" | "authenticated";
  /** The required MX level */
  mxRequired: "none" | "mta-sts" | "dnssec";
  /** The policy that set the TLS requirement (hostsRequireTls, tlsVerifyHosts, dane, mta-sts, …) */
  requiredBy?: string;
  /** The TLSA usage that matched (2 DANE-TA, 3 DANE-EE), when DANE authenticated the session */
  tlsaUsage?: number;
}

/** What every delivery event carries. */
export interface DeliveryFacts {
  /** Message id */
  id: string;
  sender: string;
  /** The recipient this event is about (absent for per-message events) */
  recipient?: string;
  /** Name of the route (Exim's router) */
  router: string;
  /** Transport name ("smtp") */
  transport: string;
  host?: HostFacts;
  tls?: OutboundTlsFacts;
  /** The outbound security decision (TLS= in the log): policy, required levels, matched TLSA usage */
  security?: SecurityTrace;
  /** Our address and port for the connection */
  sendingIp?: string;
  sendingPort?: number;
}

/** Every event Ferry fires, by name. */
export interface FerryEvents {
  "msg:received": MsgReceivedEvent;
  /** A recipient was delivered; `confirmation` is the peer's reply */
  "msg:delivery": DeliveryFacts & { confirmation: string };
  /** A host failed temporarily; `errno` is a short code (ECONNREFUSED, ETIMEDOUT, TLS, SMTP_4XX, …) */
  "msg:host:defer": DeliveryFacts & { error: string; errno: string };
  /** A recipient failed permanently */
  "msg:fail:delivery": DeliveryFacts & { error: string };
  /** A recipient failed for a local reason (routing, loop, spool) */
  "msg:fail:internal": DeliveryFacts & { error: string };
  /** All recipients are done and the message left the spool */
  "msg:complete": { id: string; sender: string };
  /** About to connect; a non-empty result means: do not connect */
  "tcp:connect": HostFacts & { id?: string };
  /** An outbound connection closed */
  "tcp:close": HostFacts & { id?: string };
  /** The peer's banner arrived; a non-empty result closes the connection */
  "smtp:connect": HostFacts & { banner: string; id?: string };
  /**
   * One certificate of the peer's chain (depth 0 is the leaf), for outbound servers and inbound clients alike
   * (`direction`); a non-empty result refuses verification
   */
  "tls:cert": HostFacts & {
    depth: number;
    certificate: Uint8Array;
    id?: string;
    /** "outbound": a server Ferry delivers to; "inbound": a client that presented a certificate */
    direction: "inbound" | "outbound";
  };
  /** DANE was in force for a host and its certificate matched no usable TLSA record (the host is deferred) */
  "dane:fail": HostFacts & { error: string; id?: string };
}

/** The name of an event. */
export type EventName = keyof FerryEvents;

// The config's list of names and this interface must name the same events.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const _sameNames: Same<(typeof EVENT_NAMES)[number], EventName> = true;
void _sameNames;

/** What a handler of event K receives: the event's facts and its name (Exim's `$event_name`). */
export type EventPayload<K extends EventName> = K extends EventName ? FerryEvents[K] & { readonly event: K }
  : never;

type PrefixesOf<N extends string> = N extends `${infer A}:${infer B}` ? A | `${A}:${PrefixesOf<B>}` : never;

/** A prefix of the colon tree ("msg", "msg:host", "tcp", …) or "*" (every event). */
export type EventPrefix = PrefixesOf<EventName> | "*";

/** The events a key (a name, a prefix or "*") receives. */
export type EventsUnder<P extends string> = P extends "*" ? EventName
  : Extract<EventName, P | `${P}:${string}`>;

/** A handler for one event; a returned non-empty string is a veto where the event allows one. */
export type EventHandler<K extends EventName> = (payload: EventPayload<K>) => unknown;

/**
 * The `events` section of the config (and of a route): a handler per event name, per prefix of the colon
 * tree, or "*" for all. For a vetoable event the most specific handler's string result decides.
 */
export type EventHandlers =
  & { [K in EventName]?: EventHandler<K> }
  & { [P in Exclude<EventPrefix, EventName>]?: (payload: EventPayload<EventsUnder<P>>) => unknown };
