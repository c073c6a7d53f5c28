/**
 * Keeps the OCSP response to staple for one certificate (RFC 6066 8 status_request; RFC 6960 responses).
 * Serves only a response that `checkOcspResponse` accepts against the configured issuer, and only until
 * its nextUpdate. File mode follows Exim's tls_ocsp_file (an atomically replaced DER file is picked up
 * without restart); fetch mode goes further and fetches, stores and refreshes the response itself.
 */
import { buildOcspRequest, checkOcspResponse, type OcspCheck, ocspUrlOf } from "./ocsp.ts";
import { fetchOcspResponse } from "./ocsp_fetch.ts";
import { writeAtomic } from "../core/atomic_file.ts";

/** Options for one certificate's stapler. */
export interface OcspStaplerOptions {
  /** PEM file: the leaf certificate first, then (unless `issuerFile` is given) its issuer */
  certFile: string;
  /** PEM file holding the issuer certificate, when `certFile` holds the leaf alone */
  issuerFile?: string;
  /** DER response file: read (and re-read when it changes) in file mode, written atomically in fetch mode */
  file?: string;
  /** Fetch responses from the certificate's AIA OCSP URL and refresh them before they expire */
  fetch?: boolean;
  /** Receives one line per event worth an operator's attention */
  log: (line: string) => void;
  /** Clock, for tests; `() => new Date()` by default */
  now?: () => Date;
  /** File mode: how often the file is stat'ed for a change; 1000 ms by default */
  pollMs?: number;
  /** Fetch mode: deadline of one fetch; 10 s by default */
  timeoutMs?: number;
  /** Fetch mode: delay after the first failure, doubled after each further one; also the shortest refresh delay */
  retryInitialMs?: number;
  /** Fetch mode: cap of the retry delay; 10 min by default */
  retryMaxMs?: number;
}

interface Served {
  der: Uint8Array;
  thisUpdate: Date;
  nextUpdate: Date;
}

/** Largest response file read, in bytes. */
const MAX_FILE_BYTES = 64 * 1024;

/** Splits a PEM text into DER certificates, in order. */
function pemCertificates(text: string): Uint8Array[] {
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  return [...text.matchAll(re)].map((m) => Uint8Array.fromBase64(m[1].replace(/\s+/g, "")));
}

function fileSignature(st: Deno.FileInfo): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtime?.getTime()}`;
}

/**
 * The OCSP response to staple for one certificate set. `current()` is synchronous and cheap (it is
 * called inside the TLS status callback); loading, checking and fetching happen in the background
 * between `start()` and `stop()`. Timers are cleared on `stop()` and never keep the process alive.
 */
export class OcspStapler {
  #opts: OcspStaplerOptions;
  #now: () => Date;
  #label: string;
  #leaf?: Uint8Array;
  #issuer?: Uint8Array;
  #url?: string;
  #served?: Served;
  #timer?: ReturnType<typeof setTimeout>;
  #running = false;
  #abort = new AbortController();
  // file mode
  #fileSig?: string;
  #loadSeq = 0;
  #polls = 0;
  // fetch mode
  #inflight?: Promise<OcspCheck | undefined>;
  #failures = 0;

  /** Creates a stapler; nothing is read before `start()`. */
  constructor(opts: OcspStaplerOptions) {
    if (!opts.fetch && !opts.file) throw new Error("OCSP stapling needs a response file or fetch: true");
    this.#opts = opts;
    this.#now = opts.now ?? (() => new Date());
    this.#label = `OCSP for "${opts.certFile}"`;
  }

  /** The DER response to staple right now, or undefined to staple nothing. */
  current(): Uint8Array | undefined {
    const s = this.#served;
    if (!s) return undefined;
    if (this.#now() >= s.nextUpdate) {
      this.#served = undefined;
      this.#opts.log(`${this.#label}: response expired at ${s.nextUpdate.toISOString()}; stapling nothing`);
      return undefined;
    }
    return s.der;
  }

  /** Seconds since the stapled response's thisUpdate; undefined when nothing is stapled (for metrics). */
  stapleAgeSeconds(): number | undefined {
    const s = this.current() ? this.#served : undefined;
    return s ? (this.#now().getTime() - s.thisUpdate.getTime()) / 1000 : undefined;
  }

  /**
   * Reads the certificates and the response file, then starts watching the file (file mode) or
   * fetching (fetch mode). Throws when the certificates are unusable or, in fetch mode, name no OCSP URL.
   */
  async start(): Promise<void> {
    if (this.#running) return;
    const certs = pemCertificates(await Deno.readTextFile(this.#opts.certFile));
    const issuers = this.#opts.issuerFile
      ? pemCertificates(await Deno.readTextFile(this.#opts.issuerFile))
      : certs.slice(1);
    if (certs.length === 0) throw new Error(`"${this.#opts.certFile}" holds no PEM certificate`);
    if (issuers.length === 0) {
      throw new Error(
        `"${this.#opts.issuerFile ?? this.#opts.certFile}" holds no issuer certificate for OCSP`,
      );
    }
    this.#leaf = certs[0];
    this.#issuer = issuers[0];
    if (this.#opts.fetch) {
      this.#url = ocspUrlOf(this.#leaf);
      if (!this.#url) throw new Error(`"${this.#opts.certFile}" names no http OCSP responder (AIA)`);
    }
    this.#running = true;
    this.#abort = new AbortController();
    if (!this.#opts.fetch) {
      await this.#pollFile();
      return;
    }
    // Fetch mode: a stored response still good after a restart is served at once and refreshed on schedule.
    const stored = this.#opts.file ? await this.#readFile(this.#opts.file) : undefined;
    if (stored?.check.ok) {
      this.#serve(stored.der, stored.check, `loaded "${this.#opts.file}"`);
      this.#schedule(this.#refreshDelay(stored.check), () => this.refresh());
    } else {
      this.refresh();
    }
  }

  /** Stops watching and fetching; `current()` keeps answering from memory. */
  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
  }

  /**
   * Fetch mode: fetches now (or joins the fetch under way), then schedules the next refresh or retry.
   * Resolves to the check of the fetched response, or undefined when the fetch failed.
   */
  refresh(): Promise<OcspCheck | undefined> {
    if (!this.#opts.fetch) return Promise.reject(new Error("OcspStapler.refresh() needs fetch mode"));
    this.#inflight ??= this.#fetchOnce().finally(() => this.#inflight = undefined);
    return this.#inflight;
  }

  #serve(der: Uint8Array, check: OcspCheck, how: string): void {
    this.#served = { der, thisUpdate: check.thisUpdate!, nextUpdate: check.nextUpdate! };
    this.#opts.log(
      `${this.#label}: ${how}: status good, thisUpdate ${check.thisUpdate!.toISOString()}, ` +
        `nextUpdate ${check.nextUpdate!.toISOString()}; stapling it`,
    );
  }

  #schedule(ms: number, fn: () => unknown): void {
    clearTimeout(this.#timer);
    if (!this.#running) return;
    // setTimeout fires at once for delays past 2^31-1 ms (~24.8 days); a long-lived response must not loop.
    const timer = setTimeout(fn, Math.min(ms, 2 ** 31 - 1));
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Refresh at half the validity, or at half the time left when that comes sooner; never sooner than retryInitialMs. */
  #refreshDelay(check: OcspCheck): number {
    const now = this.#now().getTime();
    const t = check.thisUpdate!.getTime();
    const n = check.nextUpdate!.getTime();
    const half = t + (n - t) / 2 - now;
    return Math.max(this.#retryInitialMs, Math.min(half, (n - now) / 2));
  }

  get #retryInitialMs(): number {
    return this.#opts.retryInitialMs ?? 30_000;
  }

  async #readFile(path: string): Promise<{ der: Uint8Array; check: OcspCheck } | undefined> {
    try {
      const st = await Deno.stat(path);
      if (st.size > MAX_FILE_BYTES) {
        return {
          der: new Uint8Array(),
          check: { ok: false, status: "invalid", reason: "File is too large" },
        };
      }
      const der = await Deno.readFile(path);
      return { der, check: await checkOcspResponse(der, this.#leaf!, this.#issuer!, { now: this.#now() }) };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      return { der: new Uint8Array(), check: { ok: false, status: "invalid", reason: (e as Error).message } };
    }
  }

  /** File mode: how many times the file has been looked at so far (monitoring; tests await it). */
  get polls(): number {
    return this.#polls;
  }

  /** File mode: stat the file; when it changed (or vanished), re-read and re-check it, warning once per change. */
  async #pollFile(): Promise<void> {
    const path = this.#opts.file!;
    try {
      let sig = "missing";
      try {
        sig = fileSignature(await Deno.stat(path));
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) sig = `error:${(e as Error).message}`;
      }
      if (sig === this.#fileSig) return;
      this.#fileSig = sig;
      const seq = ++this.#loadSeq;
      const loaded = sig === "missing" ? undefined : await this.#readFile(path);
      if (seq !== this.#loadSeq || !this.#running) return;
      if (loaded?.check.ok) {
        this.#serve(loaded.der, loaded.check, `loaded "${path}"`);
        return;
      }
      this.#served = undefined;
      const why = loaded ? `${loaded.check.status}: ${loaded.check.reason}` : "file does not exist";
      this.#opts.log(`${this.#label}: warning: not stapling "${path}": ${why}`);
    } finally {
      this.#polls++;
      this.#schedule(this.#opts.pollMs ?? 1000, () => this.#pollFile());
    }
  }

  async #fetchOnce(): Promise<OcspCheck | undefined> {
    clearTimeout(this.#timer);
    const url = this.#url!;
    try {
      const der = await fetchOcspResponse(url, buildOcspRequest(this.#leaf!, this.#issuer!), {
        timeoutMs: this.#opts.timeoutMs ?? 10_000,
        signal: this.#abort.signal,
      });
      const check = await checkOcspResponse(der, this.#leaf!, this.#issuer!, { now: this.#now() });
      if (check.status === "invalid") throw new Error(check.reason);
      // Authentic from here: store it, so a restart does not serve an older "good" than the responder's word.
      if (this.#opts.file) await writeAtomic(this.#opts.file, der);
      this.#failures = 0;
      if (check.ok) {
        const next = this.#refreshDelay(check);
        this.#serve(der, check, `fetched from ${url} (next refresh in ${Math.round(next / 1000)} s)`);
        this.#schedule(next, () => this.refresh());
      } else {
        this.#served = undefined;
        this.#opts.log(
          `${this.#label}: responder ${url} says ${check.status}: ${check.reason}; stapling nothing`,
        );
        this.#schedule(this.#opts.retryMaxMs ?? 600_000, () => this.refresh());
      }
      return check;
    } catch (e) {
      if (!this.#running) return undefined;
      const delay = Math.min(this.#opts.retryMaxMs ?? 600_000, this.#retryInitialMs * 2 ** this.#failures++);
      const keeping = this.current()
        ? `still stapling the response valid until ${this.#served!.nextUpdate.toISOString()}`
        : "stapling nothing";
      this.#opts.log(
        `${this.#label}: fetch failed: ${(e as Error).message}; retry in ${delay} ms; ${keeping}`,
      );
      this.#schedule(delay, () => this.refresh());
      return undefined;
    }
  }
}
