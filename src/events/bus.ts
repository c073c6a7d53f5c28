/**
 * The event bus. Handlers come from config; a handler that throws or runs late is logged and never
 * breaks SMTP or delivery. Vetoable events resolve to the handler's non-empty string result.
 */

import type { Logger } from "../core/log.ts";
import type { EventName, FerryEvents } from "./types.ts";
import { errorMessage } from "../core/error_message.ts";

type AnyHandler = (payload: unknown) => unknown;

/** Options for a bus. */
export interface EventBusOptions {
  log: Logger;
  /** How long a vetoable handler may take before it counts as "no veto" */
  timeoutMs?: number;
}

/** Dispatches events to the handlers configured for them. */
export class EventBus {
  #handlers: Map<string, AnyHandler[]> = new Map();
  #log: Logger;
  #timeoutMs: number;

  constructor(handlers: Record<string, unknown>, opts: EventBusOptions) {
    this.#log = opts.log;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    for (const [name, h] of Object.entries(handlers)) {
      if (typeof h === "function") this.on(name as EventName, h as AnyHandler);
    }
  }

  /** Subscribes a handler. */
  on<K extends EventName>(name: K, handler: (payload: FerryEvents[K]) => unknown): void {
    const list = this.#handlers.get(name) ?? [];
    list.push(handler as AnyHandler);
    this.#handlers.set(name, list);
  }

  /** True when anything listens to `name`. */
  has(name: EventName): boolean {
    return (this.#handlers.get(name)?.length ?? 0) > 0;
  }

  /** Fires an event without waiting; errors are logged. */
  emit<K extends EventName>(name: K, payload: FerryEvents[K]): void {
    void this.dispatch(name, payload);
  }

  /**
   * Runs every handler for `name` (each under the timeout) and resolves to the first non-empty string
   * any of them returned (the veto), or undefined.
   */
  async dispatch<K extends EventName>(name: K, payload: FerryEvents[K]): Promise<string | undefined> {
    const list = this.#handlers.get(name);
    if (!list) return undefined;
    let veto: string | undefined;
    for (const h of list) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const result = await Promise.race([
          Promise.resolve().then(() => h(payload)),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`handler took longer than ${this.#timeoutMs} ms`)),
              this.#timeoutMs,
            );
          }),
        ]);
        if (veto === undefined && typeof result === "string" && result !== "") veto = result;
      } catch (err) {
        this.#log.write(
          `event ${name}: handler ${h.name || "(anonymous)"} failed: ${errorMessage(err)}`,
          {
            event: name,
            error: String(err),
          },
        );
      } finally {
        clearTimeout(timer);
      }
    }
    return veto;
  }
}
