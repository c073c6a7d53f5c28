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
