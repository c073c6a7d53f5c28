/**
 * The event bus. Handlers come from config, registered for an event name, a prefix of the colon tree
 * ("msg" gets msg:delivery, msg:host:defer, …) or "*"; a route may bring its own handlers, which run before
 * the global ones. Every payload carries the event's name. A handler that throws or runs late is logged and
 * never breaks SMTP or delivery — except that for a vetoable event it refuses (fails closed).
 * SECURITY: vetoes are security decisions (`tls:cert` refuses a certificate): a failure never lets one pass.
 */

import type { Logger } from "../core/log.ts";
import { eventKeySpecificity, VETOABLE_EVENTS } from "../core/event_names.ts";
import type { EventName, EventPayload, FerryEvents } from "./types.ts";
import { errorMessage } from "../core/error_message.ts";

type AnyHandler = (payload: unknown) => unknown;

/** Options for a bus. */
export interface EventBusOptions {
  log: Logger;
  /** How long a handler may take (ms); a vetoable event's handler that takes longer refuses */
  timeoutMs?: number;
}

/** Dispatches events to the handlers configured for them. */
export class EventBus {
  #handlers: { key: string; handler: AnyHandler }[] = [];
  #log: Logger;
  #timeoutMs: number;
  #parent?: EventBus;

  constructor(handlers: Record<string, unknown>, opts: EventBusOptions, parent?: EventBus) {
    this.#log = opts.log;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#parent = parent;
    for (const [key, h] of Object.entries(handlers)) {
      if (typeof h === "function") this.#handlers.push({ key, handler: h as AnyHandler });
    }
  }

  /** A bus whose own handlers (a route's `events`) run before this bus's handlers. */
  scoped(handlers: Record<string, unknown> | undefined): EventBus {
    if (!handlers || Object.keys(handlers).length === 0) return this;
    return new EventBus(handlers, { log: this.#log, timeoutMs: this.#timeoutMs }, this);
  }

  /** Subscribes a handler for an event name, a prefix or "*". */
  on<K extends EventName>(name: K, handler: (payload: EventPayload<K>) => unknown): void {
    this.#handlers.push({ key: name, handler: handler as AnyHandler });
  }

  /** The handlers for `name`: this bus's, most specific first, then the parent's. */
  #handlersFor(name: string): AnyHandler[] {
    const own = this.#handlers
      .map((h, i) => ({ ...h, i, rank: eventKeySpecificity(h.key, name) }))
      .filter((h) => h.rank >= 0)
      .sort((a, b) => b.rank - a.rank || a.i - b.i)
      .map((h) => h.handler);
    return this.#parent ? [...own, ...this.#parent.#handlersFor(name)] : own;
  }

  /** True when anything listens to `name`. */
  has(name: EventName): boolean {
    return this.#handlersFor(name).length > 0;
  }

  /** Fires an event without waiting; errors are logged. */
  emit<K extends EventName>(name: K, payload: FerryEvents[K]): void {
    void this.dispatch(name, payload);
  }

  /**
   * Runs every handler for `name` (each under the timeout), most specific first, and resolves to the veto:
   * the result of the most specific handler that returned a string (`""` = explicitly no veto), or
   * undefined. For a vetoable event a handler that throws or times out is a veto, whatever the others said.
   */
  async dispatch<K extends EventName>(name: K, payload: FerryEvents[K]): Promise<string | undefined> {
    const list = this.#handlersFor(name);
    if (list.length === 0) return undefined;
    const vetoable = VETOABLE_EVENTS.has(name);
    const event = { ...payload, event: name };
    let verdict: string | undefined;
    let failed: string | undefined;
    for (const h of list) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const result = await Promise.race([
          Promise.resolve().then(() => h(event)),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`handler took longer than ${this.#timeoutMs} ms`)),
              this.#timeoutMs,
            );
          }),
        ]);
        if (verdict === undefined && typeof result === "string") verdict = result;
      } catch (err) {
        const who = `handler ${h.name || "(anonymous)"} failed: ${errorMessage(err)}`;
        failed ??= who;
        this.#log.write(`event ${name}: ${who}${vetoable ? " (counts as a veto)" : ""}`, {
          event: name,
          error: String(err),
        });
      } finally {
        clearTimeout(timer);
      }
    }
    if (vetoable && failed !== undefined) return failed;
    return verdict === "" ? undefined : verdict;
  }
}
