/**
 * Ferry's Redis connections (node-redis): one client per configured server, opened at start and closed at
 * stop. Every call has a deadline, commands are never queued while a server is down
 * (`disableOfflineQueue`), and client errors go to the log instead of crashing the process (node-redis
 * issues #2205, #1993). Servers are tried in order: a server that is down or times out passes the call on to
 * the next one, as Exim's `redis_servers` list does.
 * TRUSTS: the Redis servers named in config (their replies steer policy).
 */

import { errorMessage } from "../core/error_message.ts";

type RedisModule = typeof import("redis");

// node-redis is loaded when a RedisService opens (only with `redis` configured): importing it costs ~0.3 s
// of start-up that a Ferry without Redis should not pay before it listens.
let redisModule: RedisModule | undefined;

/** One Redis server as configured. */
export interface RedisServerOptions {
  /** `redis://host:port` (or `rediss://`, `unix` paths as node-redis accepts them) */
  url: string;
  /** Database number (SELECT) */
  db?: number;
  password?: string;
}

/** Options for the Redis service. */
export interface RedisServiceOptions {
  servers: RedisServerOptions[];
  /** Deadline of every call, and of connecting at start, in ms */
  timeoutMs: number;
  log: (text: string) => void;
}

/**
 * A Redis reply as node-redis gives it (RESP3): integers stay numbers here (lookups turn them into booleans);
 * a map reply (HGETALL) is an object.
 */
export type RedisReply = string | number | null | RedisReply[] | { [field: string]: RedisReply };

/** The error a failed or late Redis call ends with (the caller decides: defer, or fail open). */
export class RedisUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RedisUnavailableError";
  }
}

/** The part of a node-redis client Ferry uses. */
interface Client {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
  sendCommand(args: string[]): Promise<unknown>;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** The running Redis connections. */
export class RedisService {
  readonly #opts: RedisServiceOptions;
  readonly #clients: { url: string; client: Client }[] = [];
  // Only the first error of a run of errors is logged, so a dead server does not flood the log.
  readonly #failing = new Set<string>();

  constructor(opts: RedisServiceOptions) {
    this.#opts = opts;
  }

  /** Writes a line to Ferry's log (lookups report their failures here). */
  log(text: string): void {
    this.#opts.log(text);
  }

  /** Where the servers are, for log lines. */
  get urls(): string[] {
    return this.#opts.servers.map((s) => redactUrl(s.url));
  }

  /** Opens one client per server; waits up to the deadline for each, then carries on (calls defer meanwhile). */
  async open(): Promise<void> {
    const timeout = this.#opts.timeoutMs;
    redisModule ??= await import("redis");
    const { createClient } = redisModule;
    for (const server of this.#opts.servers) {
      const url = redactUrl(server.url);
      const client = createClient({
        url: server.url,
        database: server.db,
        password: server.password,
        // RESP2, as Exim reads Redis: integers are integers, doubles (ZSCORE) come as strings, maps as arrays.
        RESP: 2,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: timeout,
          // Reconnect forever, backing off to 2 s: a restarted Redis is found again without a Ferry restart.
          reconnectStrategy: (retries: number) => Math.min(100 * 2 ** Math.min(retries, 5), 2000),
        },
      }) as unknown as Client;
      client.on("error", (err: unknown) => {
        if (this.#failing.has(url)) return;
        this.#failing.add(url);
        this.#opts.log(`redis ${url}: ${errorMessage(err)}`);
      });
      client.on("ready", () => {
        if (this.#failing.delete(url)) this.#opts.log(`redis ${url}: connected again`);
      });
      this.#clients.push({ url, client });
      const connecting = client.connect().catch(() => undefined);
      const ready = await withDeadline(connecting.then(() => true), timeout, () => false);
      if (!ready) this.#opts.log(`redis ${url}: not reachable at start; calls defer until it is`);
    }
  }

  /** Closes every client; waits at most the deadline for each (a dead server is destroyed). */
  async close(): Promise<void> {
    const clients = this.#clients.splice(0);
    await Promise.all(clients.map(async ({ client }) => {
      if (!client.isOpen) return;
      const closed = client.isReady ? client.close().then(() => true, () => false) : Promise.resolve(false);
      if (!(await withDeadline(closed, this.#opts.timeoutMs, () => false))) client.destroy();
    }));
  }

  /** Sends one command (e.g. `["SISMEMBER", "blocked", "192.0.2.1"]`) to the first server that answers. */
  command(args: readonly string[], opts: { signal?: AbortSignal } = {}): Promise<RedisReply> {
    return this.#call((client) => client.sendCommand([...args]) as Promise<RedisReply>, opts.signal);
  }

  /** Runs a Lua script (EVALSHA, falling back to EVAL once the server has not seen it). */
  evalScript(
    script: RedisScript,
    keys: readonly string[],
    args: readonly string[],
    opts: { signal?: AbortSignal } = {},
  ): Promise<RedisReply> {
    const argv = [String(keys.length), ...keys, ...args];
    return this.#call(async (client) => {
      try {
        return await client.sendCommand(["EVALSHA", await script.sha1(), ...argv]) as RedisReply;
      } catch (err) {
        if (!errorMessage(err).startsWith("NOSCRIPT")) throw err;
        return await client.sendCommand(["EVAL", script.source, ...argv]) as RedisReply;
      }
    }, opts.signal);
  }

  async #call(run: (client: Client) => Promise<RedisReply>, signal?: AbortSignal): Promise<RedisReply> {
    if (this.#clients.length === 0) {
      throw new RedisUnavailableError("Redis is not configured (redis.servers)");
    }
    const failures: string[] = [];
    for (const { url, client } of this.#clients) {
      if (!client.isReady) {
        failures.push(`${url}: not connected`);
        continue;
      }
      try {
        return await withDeadline(run(client), this.#opts.timeoutMs, () => {
          throw new Error(`no reply within ${this.#opts.timeoutMs} ms`);
        }, signal);
      } catch (err) {
        // An error reply is Redis's answer (wrong type, script error): another server would say the same.
        if (isReplyError(err)) {
          throw new RedisUnavailableError(`${url}: ${errorMessage(err)}`, { cause: err });
        }
        failures.push(`${url}: ${errorMessage(err)}`);
      }
    }
    throw new RedisUnavailableError(failures.join("; "));
  }
}

/** A Lua script sent by its SHA-1 digest. */
export class RedisScript {
  readonly source: string;
  #sha?: Promise<string>;
  constructor(source: string) {
    this.source = source;
  }
  /** The script's SHA-1 as EVALSHA wants it. */
  sha1(): Promise<string> {
    this.#sha ??= crypto.subtle.digest("SHA-1", new TextEncoder().encode(this.source))
      .then((d) => new Uint8Array(d).toHex());
    return this.#sha;
  }
}

function isReplyError(err: unknown): boolean {
  return redisModule !== undefined && err instanceof redisModule.ErrorReply;
}

/** Hides a password in a URL for the log. */
function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, "//***@");
}

/** Settles with `p`, or with `late()` after `ms` (or when `signal` aborts). */
async function withDeadline<T>(
  p: Promise<T>,
  ms: number,
  late: () => T,
  signal?: AbortSignal,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  // A call that settles after its deadline must not become an unhandled rejection.
  p.catch(() => undefined);
  try {
    return await Promise.race([
      p,
      new Promise<T>((resolve, reject) => {
        const fire = () => {
          try {
            resolve(late());
          } catch (err) {
            reject(err);
          }
        };
        timer = setTimeout(fire, ms);
        if (signal) {
          if (signal.aborted) return reject(signal.reason);
          onAbort = () => reject(signal.reason);
          signal.addEventListener("abort", onAbort, { once: true });
        }
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}
