/** Child-process handling shared by the bench's targets and sinks. */

/**
 * Writes dirty pages back to disk (sync(1)) before a measurement, so it does not pay for the writeback of what
 * was stored before it (fsyncs wait behind it).
 */
export async function syncDisks(): Promise<void> {
  await new Deno.Command("sync").output();
}

/** Stops a child: SIGTERM, then SIGKILL if it has not exited after `graceMs`. Safe when it already exited. */
export async function terminate(
  child: Deno.ChildProcess,
  status: Promise<unknown>,
  graceMs: number,
): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, graceMs);
  await status;
  clearTimeout(timer);
}
