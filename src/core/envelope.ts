/**
 * The envelope of one accepted message, as the spool keeps it and the delivery side reads it
 * (RFC 5321 envelope, RFC 3461 DSN parameters, PROXY and TLS facts of the session that sent it).
 */

/** RFC 3461 NOTIFY keywords. */
export type NotifyKeyword = "NEVER" | "SUCCESS" | "FAILURE" | "DELAY";

/** RFC 3461 ORCPT: address type and the decoded original address. */
export interface OriginalRecipient {
  /** Address type, e.g. "rfc822" (case as given) */
  type: string;
  /** The address, xtext-decoded */
  address: string;
}

/** Where one recipient stands in delivery. */
export type RecipientStatus = "pending" | "delivered" | "failed";

/** One envelope recipient with its DSN parameters and delivery state. */
export interface Recipient {
  /** The forward path as received (without angle brackets) */
  address: string;
  notify?: NotifyKeyword[];
  orcpt?: OriginalRecipient;
  status: RecipientStatus;
  /** Number of delivery attempts so far */
  attempts?: number;
  /** Last reply or error text for this recipient */
  lastError?: string;
  /** When the next attempt is due (ms since epoch) */
  nextAttempt?: number;
  /** Free-form per-recipient data a later stage needs (route, remote MTA, ...) */
  extra?: Record<string, unknown>;
}

/** The client side of the session that delivered a message. */
export interface ClientInfo {
  ip: string;
  port: number;
  /** Reverse-DNS name when looked up and verified */
  name?: string;
  /** The EHLO/HELO argument */
  helo?: string;
}

/** PROXY protocol facts: the proxy that connected to us and the address the client connected to. */
export interface ProxyInfo {
  /** The proxy's own address and port (the TCP peer we saw) */
  proxyIp: string;
  proxyPort: number;
  /** The address and port the client connected to at the proxy */
  targetIp?: string;
  targetPort?: number;
  /** 1 or 2 */
  version: 1 | 2;
}

/** TLS facts of a session. */
export interface TlsInfo {
  /** e.g. "TLS1.3" */
  version: string;
  cipher: string;
  bits: number;
  /** Server name the client asked for */
  sni?: string;
  /** Subject of the client certificate when one was sent */
  peerSubject?: string;
  /** Whether the peer certificate verified */
  peerVerified?: boolean;
}

/** What an `auth.check` function is asked. */
export interface AuthCheckRequest {
  mechanism: string;
  /** The login (authentication identity) */
  user: string;
  /** The authorisation identity; empty when the client gave none */
  authzid: string;
  password: string;
  client: { ip: string; port: number };
}

/** The SMTP AUTH login of the session (RFC 4954). */
export interface AuthInfo {
  /** "PLAIN" or "LOGIN" */
  mechanism: string;
  /** The authentication identity: the login name */
  user: string;
  /** The authorisation identity, when the client asked for one apart from its login */
  authzid?: string;
}

/** Everything about a message except its data. */
export interface Envelope {
  /** Exim-style message id */
  id: string;
  /** Reverse path without brackets; "" is the null sender */
  sender: string;
  recipients: Recipient[];
  /** RFC 3461 RET */
  ret?: "FULL" | "HDRS";
  /** RFC 3461 ENVID, xtext-decoded */
  envid?: string;
  /** BODY= parameter */
  body?: "7BIT" | "8BITMIME" | "BINARYMIME";
  smtputf8?: boolean;
  /** REQUIRETLS (RFC 8689) was given at MAIL: deliver only over authenticated TLS, else fail with 5.7.10 */
  requireTls?: boolean;
  /** Message size in octets as stored */
  size: number;
  /** When the 250 was given (ms since epoch) */
  receivedAt: number;
  /** Protocol as logged: smtp, esmtp, esmtps, ... */
  protocol: string;
  client: ClientInfo;
  proxy?: ProxyInfo;
  tls?: TlsInfo;
  /** The client's AUTH login, when it authenticated */
  auth?: AuthInfo;
  /** Name of the host that received it */
  receivedBy: string;
  /**
   * Set when policy quarantined the message: it is stored in the `hold` queue state with this reason and stays
   * there until an operator releases it
   */
  hold?: string;
  /** Results policy chose to keep (SPF, DKIM, ...) and per-message variables */
  policy?: Record<string, unknown>;
  /** Free-form delivery state the outbound side keeps (retry, dsn sent, ...) */
  delivery?: Record<string, unknown>;
}
