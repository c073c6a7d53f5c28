/**
 * Spots a recipient given again under another spelling in one transaction, or a rewrite onto one already
 * there, so that it is stored (and delivered) once: a domain differing only in case (RFC 5321 2.4), or an
 * SRS address of ours that reverses to a recipient already accepted (SRS addresses are case-insensitive: any
 * case of one verifies, so two that reverse to the same original differing only in case are one sender).
 */

/**
 * The mailbox `address` names, as a key: the local part as given (its case is the receiving host's to judge)
 * and the domain in lower case (RFC 5321 2.4).
 */
export function mailboxKey(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? address : address.slice(0, at + 1) + address.slice(at + 1).toLowerCase();
}

/** `recipients` without the repeats of an earlier one's mailbox ({@link mailboxKey}), the first kept. */
export function withoutRepeats<R extends { address: string }>(recipients: readonly R[]): R[] {
  const seen = new Set<string>();
  return recipients.filter((r) => {
    const key = mailboxKey(r.address);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** What a recipient stands for: the mailbox it is delivered to, and whether its local part's case counts. */
interface Target {
  key: string;
  /** From an SRS reversal: the local part compares case-insensitively */
  caseless: boolean;
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
      t = { key: mailboxKey(original ?? address), caseless: original !== undefined };
      this.#targets.set(address, t);
    }
    return t;
  }

  /** True when `address` is delivered to the same mailbox as one of `accepted`. */
  repeats(accepted: readonly string[], address: string): boolean {
    const a = this.#target(address);
    return accepted.some((other) => {
      const b = this.#target(other);
      return a.caseless || b.caseless ? a.key.toLowerCase() === b.key.toLowerCase() : a.key === b.key;
    });
  }

  /** Forgets the transaction's addresses (RSET, a new MAIL). */
  reset(): void {
    this.#targets.clear();
  }
}
