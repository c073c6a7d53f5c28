/**
 * Ferry's public API: `defineConfig`, the policy and event types a config file uses, and the command line
 * (`deno run … mod.ts [--config FILE] [--check-config]`).
 */

import type { ConfigInput } from "./src/config/schema.ts";
import type { HostListCallOptions, HostListFn, HostListSpec } from "./src/core/host_list.ts";
import type { PolicyMiddleware, Stage } from "./src/policy/context.ts";
import type { EventHandlers } from "./src/events/types.ts";
import type { Check } from "./src/policy/check.ts";
import type { OutboundStep } from "./src/policy/delivery_context.ts";
import { main } from "./src/main.ts";

export type {
  BaseContext,
  ConnectContext,
  DataContext,
  HeloContext,
  MailContext,
  PolicyMiddleware,
  PolicyRecipient,
  PrdrContext,
  RcptContext,
  RefusedRecipient,
  Stage,
} from "./src/policy/context.ts";
export type {
  EventHandlers,
  EventPayload,
  EventPrefix,
  FerryEvents,
  MsgReceivedEvent,
} from "./src/events/types.ts";
export type {
  Check,
  CheckResult,
  CheckState,
  Services,
  Verdict,
  VerdictAction,
  VerdictDetails,
} from "./src/policy/check.ts";
export { accept, defer, quarantine, reject } from "./src/policy/check.ts";
export type { DeliveryContext, DeliveryRoute, OutboundStep } from "./src/policy/delivery_context.ts";
export type { VariableAccess, VariableMap, VariableScope } from "./src/policy/variables.ts";
export type { Envelope, Recipient } from "./src/core/envelope.ts";
export type { HostListCallOptions, HostListFn, HostListSpec };
export { SmtpError } from "./src/core/reply.ts";
export { relayControl } from "./src/policy/relay_control.ts";
export {
  dkim,
  type DkimOptions,
  type DkimOutcome,
  type DkimSignatureResult,
} from "./src/policy/checks/dkim.ts";
export { arc, type ArcOutcome } from "./src/policy/checks/arc.ts";
export { dmarc, type DmarcOptions, type DmarcOutcome, type DmarcStatus } from "./src/policy/checks/dmarc.ts";
export { isSrs, srsForward, srsReverse } from "./src/policy/srs.ts";
export { spf, type SpfOptions, type SpfOutcome, type SpfResultName } from "./src/policy/checks/spf.ts";
export { senderLogin, type SenderLogins } from "./src/policy/sender_login.ts";
export { hashPassword } from "./src/core/password_hash.ts";
export {
  dovecotAuth,
  DovecotAuthError,
  type DovecotAuthOptions,
  type DovecotAuthRequest,
} from "./src/policy/dovecot_auth.ts";
export type { AuthCheckRequest } from "./src/inbound/authenticator.ts";
export type { AuthInfo } from "./src/core/envelope.ts";
export {
  redisHash,
  redisKey,
  RedisLookup,
  redisLookup,
  type RedisLookupOptions,
  redisSet,
  type RedisValue,
} from "./src/policy/redis_lookup.ts";
export {
  ratelimit,
  type RateLimitOptions,
  type RateLimitOutcome,
  type RatePer,
} from "./src/policy/checks/ratelimit.ts";
export {
  rspamd,
  type RspamdOptions,
  type RspamdRecipientResult,
  type RspamdVerdict,
} from "./src/policy/checks/rspamd.ts";
export { dcc, type DccOptions, type DccOutcomeVars } from "./src/policy/checks/dcc.ts";
export { startFerry } from "./src/main.ts";

/** A Ferry configuration as written in config.ts. */
export type FerryConfig = Omit<ConfigInput, "policy" | "events" | "routes" | "checks" | "outbound"> & {
  /** Built-in and custom checks (one object per message, verdicts as values), run before `policy` chains */
  checks?: Check[];
  /** Steps run per message and route at delivery, after routing and before the transaction */
  outbound?: OutboundStep[];
  /** Policy chains per stage, run in order; built-in relay control runs before the rcpt chain */
  policy?: { [S in Stage]?: PolicyMiddleware<S>[] };
  /** Event handlers by event name, prefix of the colon tree ("msg", "tls") or "*" */
  events?: EventHandlers;
  /** Routes, first match wins; a route's own `events` run before the global ones for its deliveries */
  routes?: (Omit<NonNullable<ConfigInput["routes"]>[number], "events"> & { events?: EventHandlers })[];
};

/** Declares a configuration; the identity function that gives config.ts its types. */
export function defineConfig(config: FerryConfig): FerryConfig {
  return config;
}

// Not awaited: config.ts imports this module, so its evaluation must finish before main() loads config.ts.
if (import.meta.main) {
  main(Deno.args).then((code) => Deno.exit(code), (err) => {
    // main() answers every error with an exit status; one escaping it is a bug, and never exit 0.
    console.error(`ferry: panic: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    Deno.exit(70);
  });
}
