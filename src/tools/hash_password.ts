/**
 * `deno task hash-password`: reads a password and prints the scrypt hash to put in `auth.users` of config.ts.
 * On a terminal it asks twice with echo off (raw mode, so the password never appears on the screen or in a
 * terminal log); otherwise it reads standard input (`echo -n 'pw' | deno task hash-password`).
 */

import { hashPassword } from "../core/password_hash.ts";

const enc = new TextEncoder();

/** Reads one line from the terminal with echo off; undefined on Ctrl-C. */
async function readHidden(question: string): Promise<string | undefined> {
  // Echo off before the question: whatever is typed after it never shows.
  Deno.stdin.setRaw(true);
  await Deno.stderr.write(enc.encode(question));
  const bytes: number[] = [];
  const buf = new Uint8Array(64);
  try {
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) return new TextDecoder().decode(new Uint8Array(bytes));
      for (const b of buf.subarray(0, n)) {
        if (b === 0x0d || b === 0x0a || b === 0x04) return new TextDecoder().decode(new Uint8Array(bytes));
        if (b === 0x03) return undefined; // Ctrl-C
        if (b === 0x7f || b === 0x08) bytes.pop(); // backspace: drops one octet (enough for ASCII)
        else if (b === 0x15) bytes.length = 0; // Ctrl-U
        else bytes.push(b);
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    await Deno.stderr.write(enc.encode("\n"));
  }
}

async function readPassword(): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    const first = await readHidden("Password: ");
    if (first === undefined) Deno.exit(130);
    if (first === "") return "";
    const again = await readHidden("Again: ");
    if (again === undefined) Deno.exit(130);
    if (again !== first) {
      console.error("hash-password: the passwords differ");
      Deno.exit(64);
    }
    return first;
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
