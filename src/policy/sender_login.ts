/**
 * Built-in sender binding (Postfix's smtpd_sender_login_maps with reject_sender_login_mismatch): a MAIL FROM
 * address listed with its owners may be used only by a client logged in as one of them, and a logged-in
 * client may use only addresses it owns. Lookup: the whole address, then `@domain`; case-insensitive.
 * The null sender is not checked (bounces carry no owner).
 */

import type { PolicyMiddleware } from "./context.ts";

/** Owners by address or `@domain`, or a function answering the owners of an address (undefined: none). */
export type SenderLogins =
  | Record<string, string[]>
  | ((address: string) => string[] | undefined | Promise<string[] | undefined>);

/** Creates the sender-login middleware for the mail stage. */
export function senderLogin(map: SenderLogins): PolicyMiddleware<"mail"> {
  const table = typeof map === "function"
    ? undefined
    : new Map(Object.entries(map).map(([k, v]) => [k.toLowerCase(), v]));
  const owners = async (address: string): Promise<string[] | undefined> => {
    if (typeof map === "function") return await map(address);
    const lower = address.toLowerCase();
    const at = lower.lastIndexOf("@");
    return table!.get(lower) ?? (at >= 0 ? table!.get(lower.slice(at)) : undefined);
  };
  return async function sender_login(c, next) {
    if (c.sender === "") return await next();
    const found = await owners(c.sender);
    if (c.auth) {
      if (!found?.includes(c.auth.user)) {
        c.log(`sender <${c.sender}> not owned by login ${c.auth.user}`);
        c.reject(`Sender address rejected: not owned by user ${c.auth.user}`, 553, "5.7.1");
      }
    } else if (found) {
      c.log(`sender <${c.sender}> needs a login`);
      c.reject("Sender address rejected: not logged in", 553, "5.7.1");
    }
    await next();
  };
}
