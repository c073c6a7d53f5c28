/**
 * What a step of the outbound chain sees: one message on one route, after routing and before the SMTP
 * transaction (DKIM signing, ARC sealing, SRS). Changes apply to the copy sent over this route only; the
 * spooled message stays as received. Refusing here decides every recipient of the group.
 */

import type { Middleware } from "../core/compose.ts";
import type { Envelope } from "../core/envelope.ts";
import type { HeaderField } from "../core/headers.ts";
import type { Logger } from "../core/log.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { VariableAccess } from "./variables.ts";

/** The route a delivery takes, as the outbound chain sees it. */
export interface DeliveryRoute {
  /** The route's name (`routes[].name`, or `mx0`, `route1`, …) */
  name: string;
  /** Position in `routes` */
  index: number;
  /** True for MX routes (to the internet), false for configured hosts */
  mx: boolean;
}

/** The context of one outbound step. */
export interface DeliveryContext extends Pick<VariableAccess, "get"> {
  readonly stage: "delivery";
  /** The message id */
  readonly id: string;
  /** The spooled envelope (read only; `get` reads the variables saved in `envelope.policy`) */
  readonly envelope: Readonly<Envelope>;
  readonly route: DeliveryRoute;
  /** The recipient domain (MX routes) or the first recipient's domain (host routes) */
  readonly domain: string;
  /** The reverse path as it will be sent ("" for the null sender) */
  readonly sender: string;
  /** The recipients of this transaction as they will be sent */
  readonly recipients: readonly string[];
  /** The message as it will be sent: header fields added by earlier steps included */
  readonly content: Uint8Array;
  /** Header fields of `content` */
  readonly headers: readonly HeaderField[];
  /** Ferry's host name */
  readonly hostname: string;
  /** Ferry's resolver; queries are abandoned with `signal` */
  readonly resolver: Resolver;
  /** Aborted when the step's deadline (`limits.policyTimeout`) passes */
  readonly signal: AbortSignal;
  /** Writes a log line tagged with the message id */
  log(text: string): void;
  /** Adds a header field at the top of the copy sent (e.g. DKIM-Signature, ARC-Seal) */
  addHeader(name: string, value: string): void;
  /** Rewrites the reverse path of this transaction (SRS) */
  setSender(address: string): void;
  /** Sends to `to` instead of `address` (one for one; the spool keeps the original) */
  rewriteRecipient(address: string, to: string): void;
  /** Defers every recipient of the group (retried under the retry rules) */
  defer(text?: string, enhanced?: string): never;
  /** Fails every recipient of the group (a bounce) */
  fail(text?: string, enhanced?: string): never;
}

/** A step of the outbound chain (`outbound: [...]` in config.ts). */
export type OutboundStep = Middleware<DeliveryContext>;

/** Services an outbound step has besides the context (the log for steps made at start). */
export interface OutboundServices {
  log: Logger;
}
