/** Postfix's smtp-sink as a real downstream SMTP server for delivery tests (messages dumped to files). */

import { freePort as processFreePort } from "./process.ts";

/** A free loopback TCP port (process.ts's freePort(): not handed to another test of the run). */
export async function freePort(): Promise<number> {
  await Promise.resolve();
  return processFreePort();
}

/** A running smtp-sink. */
export interface Sink {
  port: number;
  dir: string;
  /** Every message received so far, as dumped by smtp-sink (headers it adds, then the message) */
  messages(): Promise<string[]>;
  stop(): Promise<void>;
}

/** Starts `smtp-sink` on 127.0.0.1:port, dumping each message into a temp directory. */
export async function startSink(port: number, extraArgs: string[] = []): Promise<Sink> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-sink-" });
  await Deno.chmod(dir, 0o777);
  const child = new Deno.Command("/usr/sbin/smtp-sink", {
    args: ["-u", "nobody", "-c", "-d", `${dir}/%M.`, ...extraArgs, `127.0.0.1:${port}`, "100"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const end = Date.now() + 5000;
  for (;;) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      break;
    } catch {
      if (Date.now() > end) throw new Error("smtp-sink did not start");
      await new Promise((r) => setTimeout(r, 30));
    }
  }
  return {
    port,
    dir,
    async messages() {
      const out: string[] = [];
      for await (const e of Deno.readDir(dir)) {
        if (e.isFile) out.push(await Deno.readTextFile(`${dir}/${e.name}`));
      }
      return out;
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await child.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
