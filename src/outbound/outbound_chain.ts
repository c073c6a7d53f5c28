/**
 * Runs the outbound chain (built-in steps first: DKIM signing, then `outbound` from config.ts) for one
 * group of recipients after routing and before the transaction, under `limits.policyTimeout`.
 */

import type { Envelope, Recipient } from "../core/envelope.ts";
import type { Logger } from "../core/log.ts";
import { parseHeaders } from "../core/headers.ts";
import { checkField } from "../core/header_edit.ts";
import { SmtpError } from "../core/reply.ts";
import type { Resolver } from "../dns/resolver.ts";
import { BoundResolver } from "../dns/bound_resolver.ts";
import { runStage } from "../policy/run_stage.ts";
import type { DeliveryContext, DeliveryRoute, OutboundStep } from "../policy/delivery_context.ts";
import { savedVariables } from "../policy/variables.ts";

const encoder = new TextEncoder();

/** What the chain produced for one group. */
export type PreparedDelivery =
  | { ok: true; envelope: Envelope; data: Uint8Array; recipients: Recipient[] }
  | { ok: false; temporary: boolean; status: string; text: string };

/** What the chain needs besides the message. */
export interface OutboundChainOptions {
  chain: readonly OutboundStep[];
  hostname: string;
  resolver: Resolver;
  log: Logger;
  timeoutMs: number;
}

/** Runs the chain for `recipients` of `envelope` over `route`; the recipients returned are copies. */
export async function prepareDelivery(
  envelope: Envelope,
  data: Uint8Array,
  recipients: readonly Recipient[],
  route: DeliveryRoute,
  domain: string,
  opts: OutboundChainOptions,
): Promise<PreparedDelivery> {
  let sender = envelope.sender;
  const to = new Map<string, string>();
  const added: string[] = [];
  let current: Uint8Array | undefined = data;
  const content = () => {
    if (!current) {
      const top = encoder.encode(added.join(""));
      current = new Uint8Array(top.length + data.length);
      current.set(top);
      current.set(data, top.length);
    }
    return current;
  };
  const abort = new AbortController();
  const ctx: DeliveryContext = {
    ...savedVariables(envelope.policy),
    stage: "delivery",
    id: envelope.id,
    envelope,
    route,
    domain,
    get sender() {
      return sender;
    },
    get recipients() {
      return recipients.map((r) => to.get(r.address) ?? r.address);
    },
    get content() {
      return content();
    },
    get headers() {
      return parseHeaders(content());
    },
    hostname: opts.hostname,
    resolver: new BoundResolver(opts.resolver, abort.signal),
    signal: abort.signal,
    log: (text) =>
      opts.log.write(`delivery R=${route.name}: ${text}`, { id: envelope.id, stage: "delivery" }),
    addHeader(name, value) {
      checkField(name, value);
      // Each new field goes above the ones before it, as a relay prepends trace and signature fields.
      added.unshift(`${name}: ${value}\r\n`);
      current = undefined;
    },
    setSender(address) {
      if (/[\s<>]/.test(address)) throw new TypeError(`Invalid sender address ${JSON.stringify(address)}`);
      sender = address;
    },
    rewriteRecipient(address, next) {
      if (!/^[^\s<>]+$/.test(next)) throw new TypeError(`Invalid recipient address ${JSON.stringify(next)}`);
      to.set(address, next);
    },
    defer(text = "Delivery deferred by policy", enhanced = "4.7.1"): never {
      throw new SmtpError(451, enhanced, text);
    },
    fail(text = "Delivery refused by policy", enhanced = "5.7.1"): never {
      throw new SmtpError(550, enhanced, text);
    },
  };
  try {
    await runStage("delivery", opts.chain, ctx, {
      abort,
      timeoutMs: opts.timeoutMs,
      log: (text) => opts.log.write(`R=${route.name} ${text}`, { id: envelope.id, stage: "delivery" }),
    });
  } catch (err) {
    const e = err instanceof SmtpError ? err : new SmtpError(451, "4.3.0", "outbound chain failed");
    return { ok: false, temporary: e.code < 500, status: e.enhanced, text: e.message };
  }
  return {
    ok: true,
    envelope: sender === envelope.sender ? envelope : { ...envelope, sender },
    data: content(),
    recipients: recipients.map((r) => {
      const address = to.get(r.address);
      return address ? { ...r, address } : r;
    }),
  };
}
