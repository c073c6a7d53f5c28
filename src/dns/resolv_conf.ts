/**
 * Reads resolver settings from resolv.conf(5): `nameserver` lines and the `timeout:`, `attempts:` and
 * `rotate` options. Search lists and ndots are ignored: an MTA only asks fully qualified names.
 */

import { isIp } from "../core/ip.ts";
import type { Nameserver } from "./nameserver.ts";

/** What resolv.conf says. */
export interface ResolvConf {
  /** Servers in file order; 127.0.0.1 when the file names none (as glibc does) */
  nameservers: Nameserver[];
  /** Per-try timeout in milliseconds, when set */
  timeout?: number;
  /** Rounds over all servers, when set */
  attempts?: number;
  /** Spread queries over servers instead of always starting with the first */
  rotate: boolean;
}

/** Parses resolv.conf text. Malformed lines are skipped; link-local scope ids (`%eth0`) are not supported. */
export function parseResolvConf(text: string): ResolvConf {
  const out: ResolvConf = { nameservers: [], rotate: false };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const [key, ...args] = line.split(/\s+/);
    if (key === "nameserver" && args[0] && isIp(args[0])) {
      out.nameservers.push({ address: args[0] });
    } else if (key === "options") {
      for (const opt of args) {
        const [k, v] = opt.split(":");
        const n = Number(v);
        if (k === "timeout" && Number.isInteger(n) && n >= 1) out.timeout = Math.min(n, 30) * 1000;
        else if (k === "attempts" && Number.isInteger(n) && n >= 1) out.attempts = Math.min(n, 5);
        else if (k === "rotate") out.rotate = true;
      }
    }
  }
  if (out.nameservers.length === 0) out.nameservers.push({ address: "127.0.0.1" });
  return out;
}

/** Reads and parses a resolv.conf file (default /etc/resolv.conf); a missing file counts as empty. */
export async function readResolvConf(path = "/etc/resolv.conf"): Promise<ResolvConf> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return parseResolvConf(text);
}
