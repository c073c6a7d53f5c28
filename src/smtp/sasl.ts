/**
 * SASL for SMTP AUTH (RFC 4954): the PLAIN (RFC 4616) and LOGIN mechanisms' messages, base64 as RFC 4954 4
 * wants it. Pure, no I/O: the server session drives the exchange.
 */

/** The mechanisms Ferry offers. */
export type SaslMechanism = "PLAIN" | "LOGIN";

/** What a client presented. */
export interface SaslCredentials {
  /** The authorisation identity (PLAIN only; empty when the client asked for none) */
  authzid: string;
  /** The authentication identity: the login */
  authcid: string;
  password: string;
}

/** A client response that is not valid base64 (RFC 4954: 501). */
export class SaslDecodeError extends Error {
  constructor(message = "Cannot decode response") {
    super(message);
    this.name = "SaslDecodeError";
  }
}

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const strict = new TextDecoder("utf-8", { fatal: true });

/** Decodes one client response: "=" is the empty response (RFC 4954 4); anything not base64 throws. */
export function decodeResponse(text: string): string {
  if (text === "=") return "";
  if (text === "" || !B64.test(text)) throw new SaslDecodeError();
  try {
    return strict.decode(Uint8Array.fromBase64(text));
  } catch {
    throw new SaslDecodeError("Response is not UTF-8");
  }
}

/** Encodes a server challenge. */
export function encodeChallenge(text: string): string {
  return new TextEncoder().encode(text).toBase64();
}

/** Splits a PLAIN message `[authzid] NUL authcid NUL passwd` (RFC 4616 2); undefined when malformed. */
export function parsePlain(message: string): SaslCredentials | undefined {
  const parts = message.split("\0");
  if (parts.length !== 3) return undefined;
  const [authzid, authcid, password] = parts;
  if (authcid === "" || password === "") return undefined;
  return { authzid, authcid, password };
}

/** Encodes a PLAIN message for the client side. */
export function encodePlain(user: string, password: string, authzid = ""): string {
  return new TextEncoder().encode(`${authzid}\0${user}\0${password}`).toBase64();
}
