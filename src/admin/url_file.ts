/**
 * `<spool.dir>/admin.url`: where a running Ferry's admin API answers (`http://127.0.0.1:8025`, with the port
 * actually bound), written once the listener is up and removed on stop, so `deno task queue` finds it without
 * the operator typing it. SECURITY: mode 0600 like the token beside it; it is written only by the process
 * holding the spool's lock, so a second Ferry refused at start-up never replaces it. A file left by a killed
 * process is recognised by its readers (nobody answers there, the lock is free).
 */

/** The file's name inside the spool directory. */
export const URL_FILE = "admin.url";

const pathIn = (dir: string) => `${dir.replace(/\/+$/, "")}/${URL_FILE}`;

/**
 * The URL a client on this machine uses for a listener bound to `url`: an unspecified address
 * (`0.0.0.0`, `[::]`) is reached through loopback.
 */
function localUrl(url: string): string {
  const u = new URL(url);
  if (u.hostname === "0.0.0.0") u.hostname = "127.0.0.1";
  else if (u.hostname === "[::]") u.hostname = "[::1]";
  return u.origin;
}

/** Writes `url` (made local) to `<dir>/admin.url`, mode 0600, replacing the file atomically. */
export async function writeUrlFile(dir: string, url: string): Promise<string> {
  const path = pathIn(dir);
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, localUrl(url) + "\n", { mode: 0o600 });
  await Deno.chmod(tmp, 0o600);
  await Deno.rename(tmp, path);
  return path;
}

/** Removes `<dir>/admin.url` (absent is fine). */
export async function removeUrlFile(dir: string): Promise<void> {
  try {
    await Deno.remove(pathIn(dir));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** The URL in `<dir>/admin.url`, or undefined when there is no such file. */
export async function readUrlFile(dir: string): Promise<string | undefined> {
  try {
    const text = (await Deno.readTextFile(pathIn(dir))).trim();
    return text === "" ? undefined : text;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}
