/**
 * The admin token used when `admin.tokens` is empty: made once (32 random octets, base64url) and kept in
 * `<spool.dir>/admin.token`, mode 0600, so a restart keeps it. SECURITY: the file is created exclusively
 * (`createNew`, O_EXCL: never through a symlink, never someone else's file) with mode 0600; an existing
 * regular file holding a token is read and tightened to 0600; anything else at that path (a symlink, a file
 * too short to be a token) is replaced by renaming an exclusively created file over it.
 */

/** Where the token file of the spool directory `dir` is. */
export function tokenFilePath(dir: string): string {
  return `${dir.replace(/\/+$/, "")}/admin.token`;
}

/** What is at the token path: a usable token, nothing, or something to replace. */
async function readToken(path: string): Promise<string | "absent" | "unusable"> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "absent";
    throw err;
  }
  if (!st.isFile) return "unusable";
  const token = (await Deno.readTextFile(path)).trim();
  return token.length >= 16 ? token : "unusable";
}

/** Writes `token` to a new file at `path` (O_EXCL, 0600); AlreadyExists when something is there. */
async function writeNew(path: string, token: string): Promise<void> {
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
  try {
    await file.write(new TextEncoder().encode(token + "\n"));
    await file.sync();
  } finally {
    file.close();
  }
  // The umask may have narrowed the mode, never widened it; make it exactly 0600 (the file is ours).
  await Deno.chmod(path, 0o600);
}

/** Reads the token file, creating it first when absent. */
export async function ensureTokenFile(
  dir: string,
): Promise<{ token: string; path: string; created: boolean }> {
  const path = tokenFilePath(dir);
  await Deno.mkdir(dir, { recursive: true });
  const token = crypto.getRandomValues(new Uint8Array(32)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
  for (let attempt = 0; attempt < 3; attempt++) {
    const found = await readToken(path);
    if (found === "absent") {
      try {
        await writeNew(path, token);
        return { token, path, created: true };
      } catch (err) {
        // Someone created it meanwhile: read what is there now.
        if (err instanceof Deno.errors.AlreadyExists) continue;
        throw err;
      }
    }
    if (found === "unusable") {
      const temp = `${path}.${crypto.randomUUID()}.tmp`;
      try {
        await writeNew(temp, token);
        await Deno.rename(temp, path);
      } catch (err) {
        await Deno.remove(temp).catch(() => {});
        throw err;
      }
      return { token, path, created: true };
    }
    await Deno.chmod(path, 0o600);
    return { token: found, path, created: false };
  }
  throw new Error(`${path} keeps changing while it is being created`);
}
