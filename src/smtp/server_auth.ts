/**
 * The server side of one AUTH exchange (RFC 4954 4) for PLAIN (RFC 4616) and LOGIN: challenges, the
 * client's base64 responses, `*` to cancel. It only collects credentials; checking them is the handler's.
 */

import { type Reply, reply } from "../core/reply.ts";
import {
  decodeResponse,
  encodeChallenge,
  parsePlain,
  type SaslCredentials,
  SaslDecodeError,
  type SaslMechanism,
} from "./sasl.ts";

/** RFC 4954 4: a client response line may be up to 12288 octets. */
export const AUTH_LINE_MAX = 12288 + 2;

/** How the exchange talks to the client. */
export interface AuthIo {
  /**
   * Sends a challenge and reads the client's answer; undefined when the client went away, `tooLong` when
   * the answer was longer than {@link AUTH_LINE_MAX}.
   */
  challenge(r: Reply): Promise<string | { tooLong: true } | undefined>;
}

/** The outcome of collecting credentials: the credentials, or the reply that ends the attempt. */
export type AuthExchange =
  | { mechanism: SaslMechanism; credentials: SaslCredentials }
  | { refusal: Reply; detail: string };

const cancelled = { refusal: reply(501, "5.0.0", "Authentication cancelled"), detail: "AUTH cancelled" };
const tooLong = {
  refusal: reply(500, "5.5.6", "Authentication Exchange line is too long"),
  detail: "AUTH exchange line too long",
};
const undecodable = (detail: string) => ({ refusal: reply(501, "5.5.2", "Cannot decode response"), detail });

/** Reads one response: `*` cancels, other text is base64. */
async function ask(io: AuthIo, challenge: string): Promise<string | { refusal: Reply; detail: string }> {
  const line = await io.challenge(reply(334, undefined, challenge));
  if (line === undefined) return { refusal: reply(421, "4.4.2", "Connection lost"), detail: "lost" };
  // RFC 4954 4: an over-long response ends the AUTH command; the client is back in command state.
  if (typeof line !== "string") return tooLong;
  if (line === "*") return cancelled;
  try {
    return decodeResponse(line);
  } catch (err) {
    if (err instanceof SaslDecodeError) return undecodable("bad base64 in AUTH response");
    throw err;
  }
}

/** Runs the exchange for `AUTH <arg>` on an encrypted session that offers `offered`. */
export async function collectCredentials(
  arg: string,
  offered: readonly SaslMechanism[],
  io: AuthIo,
): Promise<AuthExchange> {
  const m = /^([A-Za-z0-9_-]{1,20})(?: ([^ ]+))?$/.exec(arg);
  if (!m) {
    return { refusal: reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"), detail: "bad AUTH" };
  }
  const mechanism = m[1].toUpperCase() as SaslMechanism;
  if (!offered.includes(mechanism)) {
    return { refusal: reply(504, "5.5.4", "Unrecognized authentication type"), detail: `AUTH ${m[1]}` };
  }
  const initial = m[2];
  if (initial === "*") return cancelled;
  let first: string;
  if (initial !== undefined) {
    try {
      first = decodeResponse(initial);
    } catch (err) {
      if (err instanceof SaslDecodeError) return undecodable("bad base64 in AUTH initial response");
      throw err;
    }
  } else {
    // PLAIN without an initial response gets an empty challenge, `334 ` (RFC 4954 4).
    const got = await ask(io, mechanism === "PLAIN" ? "" : encodeChallenge("Username:"));
    if (typeof got !== "string") return got;
    first = got;
  }
  if (mechanism === "PLAIN") {
    const credentials = parsePlain(first);
    if (!credentials) return undecodable("malformed PLAIN response");
    return { mechanism, credentials };
  }
  const password = await ask(io, encodeChallenge("Password:"));
  if (typeof password !== "string") return password;
  if (first === "" || password === "") return undecodable("empty LOGIN user name or password");
  return { mechanism, credentials: { authzid: "", authcid: first, password } };
}
