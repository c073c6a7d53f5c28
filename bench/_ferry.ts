/**
 * Starts the benchmark's SMTP target under test as a child process: the real Ferry
 * (`deno run --allow-all mod.ts --config bench/ferry.config.ts` from the repo root), or, when
 * asked, the stand-in acceptor used to develop the harness. Ready when the port gives a 220 banner.
 * Trusts the repo's own code; every wait has a deadline and stop() always ends the child.
 *
 * @module
 */

import { freePort, waitForBanner } from "./_postfix.ts";
import { terminate } from "./_process.ts";

/** A running SMTP target started by the bench. */
export interface ChildTarget {
  /** Label printed in results. */
  name: string;
  /** Listening address. */
  host: string;
  /** Listening port. */
  port: number;
  /** Ferry's main log file. */
  logFile: string;
  /** Last lines the child wrote to stdout/stderr. */
  output(): string;
  /** True once the child has exited. */
  exited(): boolean;
  /** SIGTERM, wait up to 15 s, then SIGKILL; removes the spool. */
  stop(): Promise<void>;
}

/** Repository root (bench/..). */
export const repoRoot = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** True when the real Ferry entry point exists. */
export async function ferryAvailable(): Promise<boolean> {
  return (await Deno.stat(`${repoRoot}/mod.ts`).catch(() => undefined))?.isFile === true;
}

/** Options for {@link startFerryChild}. */
export interface FerryChildOptions {
  /** Run the stand-in acceptor instead of Ferry. */
  standin?: boolean;
  /** Deadline for the first 220 banner (30 s). */
  readyTimeoutMs?: number;
  /** Names this instance's spool and log (`ferry-TAG-spool`, `ferry-TAG.log`); default: none. */
  tag?: string;
  /** Extra environment for bench/ferry.config.ts (FERRY_DELIVER_TO, FERRY_TLS_CERT, FERRY_TLS_KEY). */
  env?: Record<string, string>;
}

/** Starts Ferry (or the stand-in acceptor) with a fresh spool under `parent`. */
export async function startFerryChild(parent: string, options: FerryChildOptions = {}): Promise<ChildTarget> {
  const port = freePort();
  const suffix = options.tag ? `-${options.tag}` : "";
  const spool = `${parent}/ferry${suffix}-spool`;
  const logFile = `${parent}/ferry${suffix}.log`;
  await Deno.mkdir(spool, { recursive: true });
  const args = options.standin
    ? ["run", "--allow-all", "bench/_standin_acceptor.ts"]
    : ["run", "--allow-all", "mod.ts", "--config", "bench/ferry.config.ts"];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: repoRoot,
    env: { ...options.env, FERRY_PORT: String(port), FERRY_SPOOL: spool, FERRY_LOG: logFile },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      lines.push(...text.trimEnd().split("\n"));
      if (lines.length > 40) lines.splice(0, lines.length - 40);
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]).catch(() => undefined);
  let exited = false;
  const status = child.status.finally(() => exited = true);
  const stop = async () => {
    if (!exited) await terminate(child, status, 15_000);
    await drained;
    await Deno.remove(spool, { recursive: true }).catch(() => undefined);
  };
  try {
    await Promise.race([
      waitForBanner("127.0.0.1", port, options.readyTimeoutMs ?? 30_000),
      status.then((s) => {
        throw new Error(`exited with code ${s.code} before accepting connections`);
      }),
    ]);
  } catch (e) {
    await stop();
    await drained;
    throw new Error(
      `${options.standin ? "stand-in" : "Ferry"} did not start: ${(e as Error).message}\n` +
        lines.slice(-10).join("\n"),
    );
  }
  return {
    name: options.standin ? "stand-in" : "ferry",
    host: "127.0.0.1",
    port,
    logFile,
    output: () => lines.join("\n"),
    exited: () => exited,
    stop,
  };
}
