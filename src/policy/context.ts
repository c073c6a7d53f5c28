/**
 * What a policy middleware sees at each stage (connect, helo, mail, rcpt, data, prdr) and the verdicts it
 * can give. Rejections are thrown as SmtpError, so a verdict ends the chain wherever it is given.
 */

import type {
  AuthInfo,
  ClientInfo,
  NotifyKeyword,
  OriginalRecipient,
  ProxyInfo,
  TlsInfo,
} from "../core/envelope.ts";
import type { HeaderField } from "../core/headers.ts";
import { SmtpError } from "../core/reply.ts";
import type { Middleware } from "../core/compose.ts";
import type { FieldMatcher } from "../core/header_edit.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { VariableAccess } from "./variables.ts";

/** The policy stages, in session order. */
export type Stage = "connect" | "helo" | "mail" | "rcpt" | "data" | "prdr";

/** A recipient as policy sees it. */
export interface PolicyRecipient {
  /** `local@domain` */
  address: string;
  local: string;
  /** Domain as given (empty for a bare `postmaster`) */
  domain: string;
  notify?: NotifyKeyword[];
  orcpt?: OriginalRecipient;
}

/** Facts and verdicts common to every stage. */
export interface BaseContext extends VariableAccess {
  readonly stage: Stage;
  readonly client: ClientInfo;
  /** Our own address and port for this connection */
  readonly server: { ip: string; port: number };
  /**
   * PROXY protocol facts when a valid header came: the proxy's own address, and `targetIp`/`targetPort`, the
   * address the client connected to at the proxy (`server` stays Ferry's own socket address)
   */
  readonly proxy?: ProxyInfo;
  /**
   * True when the client's host is in `proxyRequiredHosts` and the PROXY negotiation failed (missing, late
   * or invalid header): `client` is then the proxy's address and every command but QUIT will be refused
   */
  readonly proxyFailed: boolean;
  readonly tls?: TlsInfo;
  /** The SMTP AUTH login, once the client authenticated */
  readonly auth?: AuthInfo;
  readonly helo?: string;
  /** Aborted when this stage's deadline (`limits.policyTimeout`) passes: hand it to fetches and lookups */
  readonly signal: AbortSignal;
  /** Ferry's DNS resolver; every query is abandoned with `signal` */
  readonly resolver: Resolver;
  /** The authserv-id of our Authentication-Results (`authservId`, default the host name) */
  readonly authservId: string;
  /** Writes a log line tagged with the client and stage */
  log(text: string): void;
  /** Rejects permanently (default 550 5.7.1) */
  reject(text?: string, code?: number, enhanced?: string): never;
  /** Rejects temporarily (default 451 4.7.1) */
  defer(text?: string, code?: number, enhanced?: string): never;
  /** Answers (default 421 4.7.0) and closes the connection */
  drop(text?: string, code?: number, enhanced?: string): never;
}

/** The connect stage. */
export type ConnectContext = BaseContext;
/** The helo stage: `helo` is the name just given. */
export type HeloContext = BaseContext & { readonly helo: string; readonly esmtp: boolean };

/** The mail stage. */
export interface MailContext extends BaseContext {
  /** Reverse path, "" for the null sender */
  readonly sender: string;
  readonly size?: number;
  readonly smtputf8: boolean;
  /** MAIL asked for PRDR (offered when `prdr.enable`): the prdr stage will run if there is more than one recipient */
  readonly prdr: boolean;
}

/** The rcpt stage. */
export interface RcptContext extends MailContext {
  readonly recipient: PolicyRecipient;
  /** Recipients accepted so far in this transaction */
  readonly recipients: readonly PolicyRecipient[];
}

/** A recipient the prdr stage refused, with the reply it got. */
export interface RefusedRecipient {
  readonly recipient: PolicyRecipient;
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

/** The data stage: the whole message is here. */
export interface DataContext extends MailContext {
  /** The queue id the message is stored under if accepted (`id=` in the 250 reply and in the log) */
  readonly id: string;
  /** The recipients still accepted (after the prdr stage, when it ran) */
  readonly recipients: readonly PolicyRecipient[];
  /** The prdr stage ran for this message (PRDR asked for and more than one recipient) */
  readonly prdrChecked: boolean;
  /** Recipients the prdr stage refused (so far, in the prdr stage itself); empty when it did not run */
  readonly refused: readonly RefusedRecipient[];
  readonly headers: readonly HeaderField[];
  /** Octets as received */
  readonly messageSize: number;
  /** The message as received (CRLF line endings) */
  readonly content: Uint8Array;
  /** Adds a header field at the top of the stored message (after Received and Authentication-Results) */
  addHeader(name: string, value: string): void;
  /** Removes every field called `name` (case-insensitive), or the occurrences `match` picks */
  removeHeader(name: string, match?: FieldMatcher): void;
  /** Removes every field called `name` and adds one with `value` at the top */
  replaceHeader(name: string, value: string): void;
  /** Adds an Authentication-Results method result (`spf=pass smtp.mailfrom=…`) to the merged header */
  addAuthResult(result: string): void;
  /** Rewrites the envelope sender (reverse path; "" is the null sender) */
  setSender(address: string): void;
  /** Replaces a recipient by others (aliases); an empty list drops it */
  rewriteRecipient(address: string, to: readonly string[]): void;
  /** Accepts the message but throws it away */
  discard(): void;
}

/**
 * The prdr stage: runs once per recipient, before the data stage, when MAIL asked for PRDR and the message
 * has more than one recipient (as Exim's acl_smtp_data_prdr); a rejection here refuses this recipient only.
 * `recipients` holds every recipient of the transaction.
 */
export interface PrdrContext extends DataContext {
  readonly recipient: PolicyRecipient;
}

/** Context per stage. */
export interface StageContexts {
  connect: ConnectContext;
  helo: HeloContext;
  mail: MailContext;
  rcpt: RcptContext;
  data: DataContext;
  prdr: PrdrContext;
}

/** A policy middleware for stage S. */
export type PolicyMiddleware<S extends Stage> = Middleware<StageContexts[S]>;

/** The verdict helpers every context carries. */
export function verdicts(): Pick<BaseContext, "reject" | "defer" | "drop"> {
  return {
    reject(text = "Rejected by policy", code = 550, enhanced = "5.7.1"): never {
      throw new SmtpError(code, enhanced, text);
    },
    defer(text = "Temporarily rejected by policy, try again later", code = 451, enhanced = "4.7.1"): never {
      throw new SmtpError(code, enhanced, text);
    },
    drop(text = "Connection refused by policy", code = 421, enhanced = "4.7.0"): never {
      throw new SmtpError(code, enhanced, text, { close: true });
    },
  };
}
