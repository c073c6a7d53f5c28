/**
 * mailauth's modules, loaded on first use: importing them costs ~0.15 s of start-up, which a Ferry without
 * SPF, DKIM, ARC or DMARC configured should not pay before it listens. A check that needs one loads it in
 * `open()` (before the listeners bind), so no message waits for the import.
 */

type DkimVerifyModule = typeof import("mailauth/lib/dkim/verify.js");
type SpfModule = typeof import("mailauth/lib/spf/index.js");
type DmarcModule = typeof import("mailauth/lib/dmarc/index.js");
type ArcModule = typeof import("mailauth/lib/arc/index.js");

let dkimVerify: Promise<DkimVerifyModule> | undefined;
let spf: Promise<SpfModule> | undefined;
let dmarc: Promise<DmarcModule> | undefined;
let arc: Promise<ArcModule> | undefined;

/** mailauth's DKIM verifier module. */
export function dkimVerifyModule(): Promise<DkimVerifyModule> {
  return dkimVerify ??= import("mailauth/lib/dkim/verify.js");
}

/** mailauth's SPF module. */
export function spfModule(): Promise<SpfModule> {
  return spf ??= import("mailauth/lib/spf/index.js");
}

/** mailauth's DMARC module. */
export function dmarcModule(): Promise<DmarcModule> {
  return dmarc ??= import("mailauth/lib/dmarc/index.js");
}

/** mailauth's ARC module (verify and seal). */
export function arcModule(): Promise<ArcModule> {
  return arc ??= import("mailauth/lib/arc/index.js");
}
