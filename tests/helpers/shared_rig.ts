/**
 * Test cases that share one costly rig of real peers (Postfix, unbound, nginx…): each case is its own
 * `Deno.test`, so `--filter` can pick any of them; the rig is started by the first case that runs and stopped
 * after the module's last test by `Deno.test.afterAll`, which runs whichever cases a filter selected (a
 * countdown of cases never reached zero under a filter and left Postfix running).
 */

/** One case run against the shared rig. */
export interface RigCase<R> {
  name: string;
  fn: (rig: R) => Promise<void>;
}

/** Registers `cases` as tests named `<prefix>: <name>` on one rig made by `start` on first use. */
export function testsOnSharedRig<R extends { stop(): Promise<void> }>(
  prefix: string,
  start: () => Promise<R>,
  cases: RigCase<R>[],
): void {
  let rig: Promise<R> | undefined;
  Deno.test.afterAll(async () => {
    // A rig that failed to start has failed its first case already: nothing to stop.
    const r = await rig?.catch(() => undefined);
    await r?.stop();
  });
  for (const c of cases) {
    Deno.test({
      name: `${prefix}: ${c.name}`,
      sanitizeResources: false,
      sanitizeOps: false,
      async fn() {
        await c.fn(await (rig ??= start()));
      },
    });
  }
}
