/**
 * The spool's free-space guard, Postfix's `queue_minfree`: a message is refused with 452 4.3.1 at MAIL when
 * the file system holding the spool has less than `minFree` octets available after the declared SIZE.
 * The figure comes from statfs(2) (space available to unprivileged users), cached for a short while so a
 * busy listener does not make one system call per MAIL.
 */

import { statfsSync } from "node:fs";

/** Options of {@link SpaceGuard}. */
export interface SpaceGuardOptions {
  /** The spool directory */
  dir: string;
  /** Octets that must stay free (0: only the declared SIZE must fit) */
  minFree: number;
  /** How long a measurement is reused, ms (default 1000) */
  cacheMs?: number;
  /** Octets available (tests replace it); default: statfs of `dir` */
  measure?: (dir: string) => number;
  now?: () => number;
}

/** Octets available to unprivileged users on the file system holding `dir`. */
export function availableSpace(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/** Answers "is there room for a message of this size?". */
export class SpaceGuard {
  #opts: SpaceGuardOptions;
  #free = Infinity;
  #at = -Infinity;

  constructor(opts: SpaceGuardOptions) {
    this.#opts = opts;
  }

  /** Octets available now (cached). A file system that cannot be measured counts as having room. */
  available(): number {
    const now = (this.#opts.now ?? Date.now)();
    if (now - this.#at >= (this.#opts.cacheMs ?? 1000)) {
      try {
        this.#free = (this.#opts.measure ?? availableSpace)(this.#opts.dir);
      } catch {
        this.#free = Infinity;
      }
      this.#at = now;
    }
    return this.#free;
  }

  /** Whether a message of `size` octets (0 when not declared) leaves at least `minFree` available. */
  hasRoom(size = 0): boolean {
    return this.available() - size >= this.#opts.minFree;
  }

  /** Forgets the cached figure (after a write failed for lack of space). */
  invalidate(): void {
    this.#at = -Infinity;
  }
}
