/** Shared helpers of the spool tests: envelopes and running the child process of _spool_child.ts. */

import type { Envelope } from "../../src/core/envelope.ts";

/** A minimal valid envelope for `id`. */
export function testEnvelope(id: string, extra: Partial<Envelope> = {}): Envelope {
  return {
    id,
    sender: "sender@example.org",
    recipients: [{ address: "rcpt@example.com", status: "pending" }],
    size: 0,
    receivedAt: 1_700_000_000_000,
    protocol: "esmtp",
    client: { ip: "127.0.0.1", port: 40000 },
    receivedBy: "test.local",
    ...extra,
  };
}

/** Runs `fn` with a spool directory path inside a new temporary directory, removed afterwards. */
export async function withSpoolDir(prefix: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await fn(`${dir}/spool`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The child script's path. */
export const CHILD_SCRIPT = new URL("./_spool_child.ts", import.meta.url).pathname;

/** Parsed child output: acknowledged ids with their digest, failed stores with the error name. */
export interface ChildResults {
  ok: Map<string, string>;
  failed: { id: string; name: string; message: string }[];
  lines: string[];
}

/** Parses the child's stdout lines (a last partial line is ignored: it was cut by the kill). */
export function parseChildOutput(text: string): ChildResults {
  const lines = text.split("\n");
  lines.pop();
  const ok = new Map<string, string>();
  const failed: ChildResults["failed"] = [];
  for (const line of lines) {
    const [tag, id, third, ...rest] = line.split(" ");
    if (tag === "OK") ok.set(id, third);
    if (tag === "FAIL") failed.push({ id, name: third, message: rest.join(" ") });
  }
  return { ok, failed, lines };
}
