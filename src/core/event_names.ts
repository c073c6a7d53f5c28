/** The names of Ferry's events (Exim's names), shared by the config check and the event room. */

/** Every event name a config's `events` section may use. */
export const EVENT_NAMES = [
  "msg:received",
  "msg:delivery",
  "msg:host:defer",
  "msg:fail:delivery",
  "msg:fail:internal",
  "msg:complete",
  "tcp:connect",
  "tcp:close",
  "smtp:connect",
  "tls:cert",
  "dane:fail",
] as const;

/** The events a handler may veto (a non-empty string result refuses; a failing handler refuses too). */
export const VETOABLE_EVENTS: ReadonlySet<string> = new Set(["tcp:connect", "smtp:connect", "tls:cert"]);

/**
 * Prefixes of the colon tree a handler may be registered for ("msg" receives msg:delivery, msg:host:defer, …),
 * and "*" for every event: Exim's single event_action seeing every event through $event_name.
 */
export const EVENT_PREFIXES: readonly string[] = [
  "*",
  ...new Set(EVENT_NAMES.flatMap((n) => {
    const parts = n.split(":");
    return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join(":"));
  })),
];

/** Every key an `events` section (global or per route) may use: event names, prefixes and "*". */
export const EVENT_KEYS: readonly string[] = [...EVENT_NAMES, ...EVENT_PREFIXES];

/**
 * How specific `key` is for `name`: 100 for the exact name, 1 + the number of its parts for a prefix, 0
 * for "*"; -1 when it does not apply. More specific handlers run first and their veto verdict wins.
 */
export function eventKeySpecificity(key: string, name: string): number {
  if (key === name) return 100;
  if (key === "*") return 0;
  return name.startsWith(key + ":") ? 1 + key.split(":").length : -1;
}
