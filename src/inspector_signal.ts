/**
 * Keeps SIGUSR1 from opening a debugger. Since Deno 2.9.2 a SIGUSR1 sent to a running `deno` process starts
 * the V8 inspector on 127.0.0.1:9229 (as in Node.js), with no flag to turn it off: anyone on the host who
 * may signal the relay could then run code in it by connecting to that port. Ferry has no use for SIGUSR1
 * (its report command is SIGUSR2), so the process ignores the signal outright.
 *
 * How: Deno installs one process-wide handler per signal (shared by its own inspector trigger and by
 * `Deno.addSignalListener`) the first time the signal is registered, and never again. Registering a listener
 * here makes that installation happen now; setting the disposition to SIG_IGN through libc afterwards then
 * sticks, even when the runtime adds its inspector trigger later (it does so about 500 ms after start-up).
 * An ignored signal is discarded by the kernel when it is sent, so neither the trigger nor the listener runs.
 * The disposition is inherited by processes Ferry spawns.
 */

const SIGUSR1 = 10; // Linux (x86, arm, most others); Deno's signal names are mapped per platform
const SIG_IGN = 1n;

/** What happened; `ignored: false` carries the reason in `detail` for the log. */
export interface InspectorSignalResult {
  ignored: boolean;
  detail: string;
}

/** Makes the process ignore SIGUSR1 (Linux only); never throws. */
export function ignoreInspectorSignal(): InspectorSignalResult {
  if (Deno.build.os !== "linux") return { ignored: false, detail: `not done on ${Deno.build.os}` };
  try {
    // Forces the runtime's one-time handler installation before the disposition is replaced.
    Deno.addSignalListener("SIGUSR1", () => {});
    const libc = Deno.dlopen("libc.so.6", {
      signal: { parameters: ["i32", "usize"], result: "usize" },
    });
    try {
      const previous = libc.symbols.signal(SIGUSR1, SIG_IGN);
      // SIG_ERR is (void (*)(int)) -1
      if (BigInt(previous) === 0xffff_ffff_ffff_ffffn) return { ignored: false, detail: "signal() failed" };
    } finally {
      libc.close();
    }
    return { ignored: true, detail: "SIGUSR1 ignored (it would open Deno's inspector)" };
  } catch (err) {
    return { ignored: false, detail: err instanceof Error ? err.message : String(err) };
  }
}
