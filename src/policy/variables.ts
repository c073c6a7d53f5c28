/**
 * Typed policy variables (Hono's ContextVariableMap): `c.set(key, value)` and `c.get(key)`, typed by the
 * declared `VariableMap`. A check declares what it sets by augmenting the interface:
 *
 * ```ts
 * declare module "../variables.ts" { interface VariableMap { spf: SpfOutcome } }
 * ```
 *
 * Variables set at connect and helo live for the connection; those set from MAIL on live for the message
 * and, when JSON-serialisable, are saved in the spool envelope (`envelope.policy`) so delivery sees them.
 */

/** The variables built-in checks set, by name; augment it to type your own. */
// deno-lint-ignore no-empty-interface
export interface VariableMap {}

/** Where a variable lives. */
export type VariableScope = "connection" | "message";

/** Typed get/set over a declared map; keys not declared are allowed and typed `unknown`. */
export interface VariableAccess {
  /** The message's value, else the connection's, else undefined. */
  get<K extends keyof VariableMap>(key: K): VariableMap[K] | undefined;
  get(key: string): unknown;
  /**
   * Sets a variable; the scope defaults to "connection" at the connect and helo stages and to "message"
   * after (a message variable is gone after RSET or the next MAIL).
   */
  set<K extends keyof VariableMap>(key: K, value: VariableMap[K], options?: { scope?: VariableScope }): void;
  set(key: string, value: unknown, options?: { scope?: VariableScope }): void;
}

/** The two scopes of one connection. */
export class Variables {
  readonly connection = new Map<string, unknown>();
  message = new Map<string, unknown>();

  /** Starts a new message: message variables are cleared. */
  resetMessage(): void {
    this.message = new Map();
  }

  /** Access for one stage: `defaultScope` is where `set` writes unless told otherwise. */
  access(defaultScope: VariableScope): VariableAccess {
    return {
      get: (key: string) => this.message.has(key) ? this.message.get(key) : this.connection.get(key),
      set: (key: string, value: unknown, options?: { scope?: VariableScope }) => {
        (options?.scope ?? defaultScope) === "connection"
          ? this.connection.set(key, value)
          : this.message.set(key, value);
      },
    } as VariableAccess;
  }

  /** The message variables that survive JSON (what the spool keeps), or undefined when there are none. */
  messageJson(): Record<string, unknown> | undefined {
    if (this.message.size === 0) return undefined;
    const out: Record<string, unknown> = {};
    for (const [k, v] of this.message) {
      try {
        if (JSON.stringify(v) !== undefined) out[k] = JSON.parse(JSON.stringify(v));
      } catch { /* not serialisable: kept in memory only */ }
    }
    return out;
  }
}

/** Read-only access over saved variables (the delivery side reads `envelope.policy`). */
export function savedVariables(saved: Record<string, unknown> | undefined): Pick<VariableAccess, "get"> {
  return { get: (key: string) => saved?.[key] } as Pick<VariableAccess, "get">;
}
