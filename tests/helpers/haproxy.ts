/** Real HAProxy for PROXY-protocol tests: the shared config preamble and a foreground launch. */

/** A running HAProxy (`-db`, foreground). */
export interface HaproxyProcess {
  child: Deno.ChildProcess;
  /** True once the process has exited */
  exited(): boolean;
  /** Its stderr so far, once it has exited or been stopped */
  stderr: Promise<string>;
  /** Kills it (if running) and waits for it */
  stop(): Promise<void>;
}

/** Writes `<dir>/haproxy.cfg` (TCP mode, short timeouts, errors to stderr, then `sections`) and starts HAProxy. */
export async function spawnHaproxy(dir: string, sections: string[]): Promise<HaproxyProcess> {
  const cfg = [
    "global",
    "  log stderr format raw local0 err",
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    "  timeout check 2s",
    ...sections,
    "",
  ].join("\n");
  await Deno.writeTextFile(`${dir}/haproxy.cfg`, cfg);
  const child = new Deno.Command("haproxy", {
    args: ["-f", `${dir}/haproxy.cfg`, "-db"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  const stderr = new Response(child.stderr).text().catch(() => "");
  return {
    child,
    exited: () => exited,
    stderr,
    async stop() {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await status;
      await stderr;
    },
  };
}
