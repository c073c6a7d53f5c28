/**
 * Child process for the spool crash and write-error tests. Usage:
 *   deno run -A _spool_child.ts <dir> <writers> <maxBytes> [limit]
 * Stores random messages from <writers> concurrent loops; after each store() resolves prints
 * "OK <id> <sha256>", after a rejection "FAIL <id> <error name> <message>". Stops after [limit] failures
 * (default: runs until killed). Prints "READY" once the spool is open.
 */

import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { sha256Hex } from "../../src/spool/_spool_db.ts";

const [dir, writersArg, maxBytesArg, limitArg] = Deno.args;
const writers = Number(writersArg);
const maxBytes = Number(maxBytesArg);
const failLimit = limitArg === undefined ? Infinity : Number(limitArg);
const encoder = new TextEncoder();

function say(line: string): void {
  // Synchronous write: a line on stdout means the store had resolved before it.
  const bytes = encoder.encode(line + "\n");
  let offset = 0;
  while (offset < bytes.length) offset += Deno.stdout.writeSync(bytes.subarray(offset));
}

const spool = new SqliteSpool({ dir, log: (line) => console.error(line) });
await spool.open();
say("READY");
let failures = 0;
await Promise.all(Array.from({ length: writers }, async () => {
  while (failures < failLimit) {
    const size = 1 + Math.floor(Math.random() * maxBytes);
    const data = crypto.getRandomValues(new Uint8Array(size));
    const id = spool.newId();
    const digest = sha256Hex(data);
    try {
      await spool.store({
        id,
        sender: "child@example.org",
        recipients: [{ address: "rcpt@example.com", status: "pending" }],
        size,
        receivedAt: Date.now(),
        protocol: "esmtp",
        client: { ip: "127.0.0.1", port: 1 },
        receivedBy: "child.test",
        policy: { sha256: digest },
      }, data);
      say(`OK ${id} ${digest}`);
    } catch (err) {
      failures++;
      const e = err as Error;
      say(`FAIL ${id} ${e.name} ${e.message.replaceAll("\n", " ")}`);
    }
  }
}));
await spool.close().catch((err) => say(`CLOSEFAIL ${(err as Error).message}`));
say("DONE");
