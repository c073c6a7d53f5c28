/**
 * A client of the admin API for programs on the operator's side (`deno task queue`, the queue benchmark):
 * JSON requests with the bearer token, errors as {@link AdminApiError} (the server's `error` and `details`)
 * or {@link AdminUnreachableError} (nobody answers). The transport is a `fetch`-like function, so the same
 * client also drives the admin app in-process.
 */

/** The API answered with an error status. */
export class AdminApiError extends Error {
  /** The HTTP status */
  readonly status: number;
  /** The `details` of a 400 (which field, what is wrong) */
  readonly details?: { path: string; message: string }[];
  constructor(status: number, message: string, details?: { path: string; message: string }[]) {
    super(message);
    this.name = "AdminApiError";
    this.status = status;
    this.details = details;
  }
}

/** Nobody answered at the URL (connection refused, reset, TLS failure, timeout). */
export class AdminUnreachableError extends Error {
  /** The URL tried */
  readonly url: string;
  constructor(url: string, cause: unknown) {
    // fetch's own message is only "fetch failed"; what went wrong is in its cause.
    const inner = (cause as Error)?.cause as Error | undefined;
    const why = [(cause as Error)?.message ?? String(cause), inner?.message].filter(Boolean).join(": ");
    super(`no answer from the admin API at ${url}: ${why}`, { cause });
    this.name = "AdminUnreachableError";
    this.url = url;
  }
}

/** How a client reaches the API. */
export interface AdminClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:8025` */
  url: string;
  /** A bearer token the API accepts */
  token: string;
  /** PEM certificates to trust for an `https:` URL (the admin listener's own, typically) */
  caCerts?: string[];
  /** Transport (default: `fetch`); the in-process admin app's `fetch` for a stopped Ferry */
  fetch?: (request: Request) => Promise<Response>;
  /** Deadline of one request in ms (default 60 s: a bounce of many messages takes a while) */
  timeoutMs?: number;
}

/** A JSON client of the admin API. */
export class AdminClient {
  #url: string;
  #token: string;
  #fetch: (request: Request) => Promise<Response>;
  #timeoutMs: number;
  #http?: Deno.HttpClient;

  constructor(options: AdminClientOptions) {
    this.#url = options.url.replace(/\/+$/, "");
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    if (options.fetch) {
      this.#fetch = options.fetch;
    } else {
      const http = options.caCerts?.length ? Deno.createHttpClient({ caCerts: options.caCerts }) : undefined;
      this.#http = http;
      this.#fetch = (req) => fetch(req, http ? { client: http } : {});
    }
  }

  /** The base URL. */
  get url(): string {
    return this.#url;
  }

  /** GET `path` (with `query`, undefined values left out); resolves to the parsed JSON body. */
  get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const qs = params.size > 0 ? `?${params}` : "";
    return this.#send<T>("GET", path + qs);
  }

  /** POST `body` as JSON to `path`; resolves to the parsed JSON body. */
  post<T>(path: string, body: unknown = {}): Promise<T> {
    return this.#send<T>("POST", path, body);
  }

  /** Releases the HTTP client's connections. */
  close(): void {
    this.#http?.close();
  }

  async #send<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token}`,
      accept: "application/json",
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    const request = new Request(this.#url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    let res: Response;
    try {
      res = await this.#fetch(request);
    } catch (err) {
      throw new AdminUnreachableError(this.#url, err);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const e = parsed as { error?: unknown; details?: { path: string; message: string }[] } | undefined;
      const message = typeof e?.error === "string" ? e.error : `HTTP ${res.status}`;
      throw new AdminApiError(res.status, message, e?.details);
    }
    if (parsed === undefined) throw new AdminApiError(res.status, "the answer is not JSON");
    return parsed as T;
  }
}
