/**
 * The accept loop never stops for good while Ferry runs: a setNoDelay failure does not leak the connection,
 * a broken listener (BadResource) is opened again on the same port, and other accept errors back off.
 */

import assert from "node:assert/strict";
import { acceptLoop, type AcceptSource } from "../../src/inbound/accept_loop.ts";
import { waitFor } from "../helpers/downstream.ts";

Deno.test("acceptLoop() hands over a connection whose setNoDelay throws instead of leaking it", async () => {
  let stopping = false;
  const conn = {
    setNoDelay() {
      throw new Deno.errors.BadResource("Bad resource ID");
    },
    close() {},
  } as unknown as Deno.Conn;
  let given = 0;
  const pending: ((c: Deno.Conn) => void)[] = [];
  const fake: AcceptSource = {
    accept: () => {
      if (stopping) return Promise.reject(new Deno.errors.BadResource("closed"));
      return given++ === 0 ? Promise.resolve(conn) : new Promise<Deno.Conn>((r) => pending.push(r));
    },
    close() {},
  };
  const got: Deno.Conn[] = [];
  const lines: string[] = [];
  const loop = acceptLoop(fake, {
    stopping: () => stopping,
    connection: (c) => got.push(c),
    reopen: () => fake,
    log: (t) => lines.push(t),
  });
  await waitFor(() => got.length === 1, 8000, "the connection");
  assert.equal(got[0], conn);
  assert.deepEqual(lines, ["setNoDelay failed: Bad resource ID"]);
  stopping = true;
  pending[0](conn);
  // The loop hands over what it accepted and then ends when accept fails while stopping.
  await loop;
  assert.equal(got.length, 2);
});

Deno.test("acceptLoop() reopens a listener that broke (BadResource) while not stopping and keeps serving", async () => {
  let listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  let stopping = false;
  const served: Deno.Conn[] = [];
  const lines: string[] = [];
  const loop = acceptLoop(listener, {
    stopping: () => stopping,
    connection: (c) => {
      served.push(c);
      c.close();
    },
    reopen: () => (listener = Deno.listen({ hostname: "127.0.0.1", port })),
    log: (t) => lines.push(t),
    maxPauseMs: 50,
  });
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    await waitFor(() => served.length === 1, 8000, "the first connection");
    listener.close(); // accept() now fails with BadResource, though nobody is stopping
    await waitFor(() => lines.includes("listener reopened"), 8000, "the reopen");
    assert.match(lines[0], /^listener failed: .*; reopening; retrying in \d+ ms$/);
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    await waitFor(() => served.length === 2, 8000, "a connection after the reopen");
  } finally {
    stopping = true;
    listener.close();
    await loop;
  }
});

Deno.test("acceptLoop() backs off and retries after an unexpected accept error", async () => {
  let calls = 0;
  let stopping = false;
  const conn = { setNoDelay() {}, close() {} } as unknown as Deno.Conn;
  const fake: AcceptSource = {
    accept: () => {
      calls++;
      if (calls === 1) return Promise.reject(new Error("Too many open files"));
      if (calls === 2) return Promise.resolve(conn);
      return Promise.reject(new Deno.errors.BadResource("closed"));
    },
    close() {},
  };
  const got: Deno.Conn[] = [];
  const lines: string[] = [];
  const loop = acceptLoop(fake, {
    stopping: () => stopping,
    connection: (c) => {
      got.push(c);
      stopping = true;
    },
    reopen: () => fake,
    log: (t) => lines.push(t),
    maxPauseMs: 20,
  });
  await loop;
  assert.deepEqual(got, [conn]);
  assert.deepEqual(lines, ["accept failed: Too many open files; retrying in 20 ms"]);
});
