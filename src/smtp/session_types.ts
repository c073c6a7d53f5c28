/** Types shared by the SMTP server session and whatever drives it (the inbound room). */

import type { NotifyKeyword, OriginalRecipient, TlsInfo } from "../core/envelope.ts";
import type { Reply } from "../core/reply.ts";
import type { ByteStream } from "../core/stream.ts";
import type { Mailbox } from "./command.ts";
import type { BareLineEndings, DataMemory } from "./data_scanner.ts";
import type { SaslCredentials, SaslMechanism } from "./sasl.ts";

/** Parameters given with MAIL FROM. */
export interface MailParams {
  size?: number;
  body?: "7BIT" | "8BITMIME";
  smtputf8: boolean;
  ret?: "FULL" | "HDRS";
  envid?: string;
  prdr: boolean;
  /** REQUIRETLS (RFC 8689): the message must only travel over authenticated TLS */
  requireTls?: boolean;
}

/** One accepted RCPT with its DSN parameters. */
export interface RcptEntry {
  address: string;
  mailbox?: Mailbox;
  notify?: NotifyKeyword[];
  orcpt?: OriginalRecipient;
}

/** The transaction in progress (RFC 5321 "mail transaction"). */
export interface Transaction {
  sender: string;
  senderMailbox?: Mailbox;
  params: MailParams;
  recipients: RcptEntry[];
  /** "DATA" or "BDAT" once content started */
  via?: "DATA" | "BDAT";
}

/** Facts about the content as received. */
export interface ContentInfo {
  /** Octets kept (after unstuffing / normalising) */
  size: number;
  /** Bare CR/LF were normalised to CRLF */
  normalized: boolean;
}

/** The answer to the end of data: one reply, or PRDR per-recipient replies then a final one. */
export type MessageOutcome = { reply: Reply } | { prdr: Reply[]; final: Reply };

/** What the server session calls out to; every method may throw SmtpError to answer with it. */
export interface SessionHandler {
  /** Before the banner; throw to refuse the connection (the error's reply is sent and the connection closed). */
  connect?(): Promise<void> | void;
  helo?(name: string, esmtp: boolean): Promise<void> | void;
  mail?(tx: Transaction): Promise<void> | void;
  rcpt?(tx: Transaction, rcpt: RcptEntry): Promise<void> | void;
  /**
   * True when `rcpt` stands for a recipient `tx` already has though spelt otherwise (asked before `rcpt`): the
   * session then answers it as a repeated recipient and keeps one
   */
  repeats?(tx: Transaction, rcpt: RcptEntry): boolean;
  /** The DATA or first BDAT command, before any content */
  data?(tx: Transaction): Promise<void> | void;
  /** The whole message arrived cleanly; store it and answer (250 only once it is durable). */
  message(tx: Transaction, content: Uint8Array, info: ContentInfo): Promise<MessageOutcome>;
  /**
   * Checks AUTH credentials (RFC 4954): resolves true when they are good, false for 535. Throw SmtpError to
   * answer otherwise (454 4.7.0 when the lookup failed, 421 with `close` when the client failed too often).
   */
  authenticate?(mechanism: SaslMechanism, credentials: SaslCredentials): Promise<boolean>;
  /** Performs the TLS handshake as server over `stream`; resolves to the encrypted stream. */
  startTls?(stream: ByteStream): Promise<{ stream: ByteStream; info: TlsInfo }>;
  /** RSET, or a transaction ended. */
  reset?(): void;
  /** A protocol problem the session answered by itself (for the log). */
  protocolError?(reply: Reply, detail: string): void;
  /** A well-formed command the session refused by itself, by a limit (for the log): `what` names it. */
  refused?(reply: Reply, what: string): void;
  /** The session is over; `reason` says why. */
  closed?(reason: string): void;
}

/** Limits the session enforces. */
export interface SessionLimits {
  commandLine: number;
  textLine: number;
  messageSize: number;
  recipients: number;
  badCommands: number;
  commandTimeoutMs: number;
  dataTimeoutMs: number;
  greetingDelayMs: number;
}

/** Which extensions this session offers (decided per client by the caller). */
export interface SessionExtensions {
  pipelining: boolean;
  chunking: boolean;
  dsn: boolean;
  prdr: boolean;
  smtputf8: boolean;
  startTls: boolean;
}

/** SMTP AUTH as this listener offers it. */
export interface SessionAuth {
  /** Offered once the session is encrypted (after STARTTLS, or from the start on smtps) */
  mechanisms: SaslMechanism[];
  /** Submission role: MAIL is refused with 530 5.7.0 until the client authenticated */
  required: boolean;
}

/** Everything a server session needs. */
export interface ServerSessionOptions {
  hostname: string;
  /** Text after `220 <hostname> ` */
  banner: string;
  limits: SessionLimits;
  extensions: SessionExtensions;
  bareLineEndings: BareLineEndings;
  /** Client address as text, for the EHLO greeting line */
  clientIp: string;
  /** Bytes already read from the client (after a PROXY header) */
  initialInput?: Uint8Array;
  /** When set, every command but QUIT gets this reply (failed PROXY negotiation) */
  refuseAll?: Reply;
  /** Already encrypted (SMTPS) */
  tls?: TlsInfo;
  /** SMTP AUTH; absent when no credentials are configured */
  auth?: SessionAuth;
  /** The memory budget shared by every session's message being received (`limits.dataMemory`) */
  dataMemory?: DataMemory;
}
