/**
 * `deno task hash-password`: reads a password (from standard input, or asks on a terminal) and prints the
 * scrypt hash to put in `auth.users` of config.ts.
 */

import { hashPassword } from "../core/password_hash.ts";

async function readPassword(): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    const p = prompt("Password:");
    return p ?? "";
  }
  const text = await new Response(Deno.stdin.readable).text();
  return text.replace(/\r?\n$/, "");
}

const password = await readPassword();
if (password === "") {
  console.error("hash-password: empty password");
  Deno.exit(64);
}
console.log(await hashPassword(password));
