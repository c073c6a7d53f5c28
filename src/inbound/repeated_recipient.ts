/**
 * Spots a recipient given again under another spelling in one transaction, so that it is stored (and
 * delivered) once: a domain differing only in case (RFC 5321 2.4), or an SRS address of ours that reverses
 * to a recipient already accepted (SRS addresses are case-insensitive: any case of one verifies, so two
 * that reverse to the same original differing only in case are one sender).
 */

/** What a recipient stands for: the address it is delivered to, and whether its local part's case counts. */
interface Target {
  local: string;
  domain: string;
  /** From an SRS reversal: the local part compares case-insensitively */
  caseless: boolean;
}

function split(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf("@");
  return at < 0
    ? { local: address, domain: "" }
    : { local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase() };
}

/** One transaction's recipients as delivery targets; `reversed` gives an SRS recipient's original address. */
export class RepeatedRecipients {
  #reversed?: (address: string) => string | undefined;
  #targets = new Map<string, Target>();

  constructor(reversed?: (address: string) => string | undefined) {
    this.#reversed = reversed;
  }

  #target(address: string): Target {
    let t = this.#targets.get(address);
    if (!t) {
      const original = this.#reversed?.(address);
      t = { ...split(original ?? address), caseless: original !== undefined };
      this.#targets.set(address, t);
    }
    return t;
  }

  /** True when `address` is delivered to the same mailbox as one of `accepted`. */
  repeats(accepted: readonly string[], address: string): boolean {
    const a = this.#target(address);
    return accepted.some((other) => {
      const b = this.#target(other);
      if (a.domain !== b.domain) return false;
      return a.caseless || b.caseless ? a.local.toLowerCase() === b.local.toLowerCase() : a.local === b.local;
    });
  }

  /** Forgets the transaction's addresses (RSET, a new MAIL). */
  reset(): void {
    this.#targets.clear();
  }
}
