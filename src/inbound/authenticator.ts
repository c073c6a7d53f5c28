/**
 * Checks SMTP AUTH credentials against `auth.users` (scrypt hashes) or `auth.check` (a function, so Redis or
 * Dovecot's auth service can back it), and limits failed attempts per client address.
 * SECURITY: passwords are compared in constant time (see core/password_hash.ts); a login with an authzid
 * other than itself is refused unless `auth.check` allows it; after `maxFailures` failures within
 * `failureWindow` the address gets 421 and the connection is closed until the window passes.
 */

import { SmtpError } from "../core/reply.ts";
import { verifyPassword } from "../core/password_hash.ts";
import { withinDeadline } from "../core/deadlines.ts";
import type { SaslCredentials } from "../smtp/sasl.ts";

import type { AuthCheckRequest } from "../core/envelope.ts";
export type { AuthCheckRequest };

/** Settings of the authenticator. */
export interface AuthenticatorOptions {
  /** Login → `scrypt$…` hash */
  users?: Record<string, string>;
  /**
   * Answers true for good credentials; throwing, or not answering within `timeoutMs` (its `signal` is then
   * aborted), means the lookup failed (454 4.7.0)
   */
  check?: (request: AuthCheckRequest, opts: { signal: AbortSignal }) => boolean | Promise<boolean>;
  maxFailures: number;
  failureWindowMs: number;
  /** Deadline of one `check` call in ms (`limits.policyTimeout`; default 30 s) */
  timeoutMs?: number;
}

/** The outcome of one attempt. */
export type AuthOutcome = { ok: true } | { ok: false; reason: string };

const MAX_TRACKED = 100_000;

/** Shared by every connection of one Ferry. */
export class Authenticator {
  #opts: AuthenticatorOptions;
  #failures = new Map<string, number[]>();

  constructor(opts: AuthenticatorOptions) {
    this.#opts = opts;
  }

  #recent(ip: string, now: number): number[] {
    const list = (this.#failures.get(ip) ?? []).filter((t) => now - t < this.#opts.failureWindowMs);
    if (list.length === 0) this.#failures.delete(ip);
    else this.#failures.set(ip, list);
    return list;
  }

  #tooMany(): SmtpError {
    return new SmtpError(421, "4.7.0", "Too many failed authentication attempts, closing connection", {
      close: true,
    });
  }

  /** Checks one attempt; throws SmtpError 421 (too many failures) or 454 (lookup failed). */
  async check(
    client: { ip: string; port: number },
    mechanism: string,
    creds: SaslCredentials,
  ): Promise<AuthOutcome> {
    const now = Date.now();
    if (this.#recent(client.ip, now).length >= this.#opts.maxFailures) throw this.#tooMany();
    let outcome: AuthOutcome;
    if (this.#opts.check) {
      let ok: boolean;
      const timeoutMs = this.#opts.timeoutMs ?? 30_000;
      const abort = new AbortController();
      const request = {
        mechanism,
        user: creds.authcid,
        authzid: creds.authzid,
        password: creds.password,
        client,
      };
      try {
        ok = await withinDeadline(
          Promise.resolve().then(() => this.#opts.check!(request, { signal: abort.signal })),
          timeoutMs,
          () => {
            const why = new Error(`auth.check did not answer within ${timeoutMs} ms`);
            abort.abort(why);
            return why;
          },
        );
      } catch (err) {
        throw new SmtpError(454, "4.7.0", "Temporary authentication failure", { cause: err });
      }
      outcome = ok === true ? { ok: true } : { ok: false, reason: "credentials refused by auth.check" };
    } else {
      const stored = Object.hasOwn(this.#opts.users ?? {}, creds.authcid)
        ? this.#opts.users![creds.authcid]
        : undefined;
      const good = await verifyPassword(creds.password, stored);
      if (!good) outcome = { ok: false, reason: stored ? "wrong password" : "unknown user" };
      else if (creds.authzid !== "" && creds.authzid !== creds.authcid) {
        outcome = { ok: false, reason: `may not act as ${creds.authzid}` };
      } else outcome = { ok: true };
    }
    if (outcome.ok) return outcome;
    const list = this.#recent(client.ip, Date.now());
    list.push(Date.now());
    this.#failures.set(client.ip, list);
    if (this.#failures.size > MAX_TRACKED) {
      this.#failures.delete(this.#failures.keys().next().value!);
    }
    if (list.length >= this.#opts.maxFailures) throw this.#tooMany();
    return outcome;
  }
}
