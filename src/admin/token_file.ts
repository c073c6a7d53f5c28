/**
 * The admin token used when `admin.tokens` is empty: made once (32 random octets, base64url) and kept in
 * `<spool.dir>/admin.token`, mode 0600, so a restart keeps it. SECURITY: the file is created exclusively
 * with mode 0600; an existing file with wider permissions is tightened.
 */

/** Reads the token file, creating it first when absent. */
export async function ensureTokenFile(
  dir: string,
): Promise<{ token: string; path: string; created: boolean }> {
  const path = `${dir.replace(/\/+$/, "")}/admin.token`;
  try {
    const token = (await Deno.readTextFile(path)).trim();
    if (token.length >= 16) {
      await Deno.chmod(path, 0o600);
      return { token, path, created: false };
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const token = crypto.getRandomValues(new Uint8Array(32)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
  await Deno.mkdir(dir, { recursive: true });
  const file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    await file.write(new TextEncoder().encode(token + "\n"));
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.chmod(path, 0o600);
  return { token, path, created: true };
}
