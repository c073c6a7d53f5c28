/**
 * The queue command's exit codes for the admin API's error answers (a scripted HTTP server stands in for the
 * API: the real one is driven in tests/e2e/queue_cli_test.ts): 503 while Ferry starts → 75, 400 → 64 with the
 * details, 401 → 77, 500 → 70; `--reason` sent with the ids, and refused (64) where it does not belong.
 */

import assert from "node:assert/strict";
import { queueMain } from "../../src/queue_cli.ts";

Deno.test("queueMain() maps the admin API's error statuses to exit codes", async () => {
  let answer: { status: number; body: unknown } = { status: 200, body: {} };
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    seen.push(
      `${req.method} ${new URL(req.url).pathname} ${req.headers.get("authorization")} ${await req.text()}`,
    );
    return Response.json(answer.body, { status: answer.status });
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  const errors: string[] = [];
  const orig = { error: console.error, log: console.log };
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  console.log = () => {};
  try {
    const run = (...args: string[]) => queueMain(["--url", url, "--token", "t0ken-t0ken-t0ken", ...args]);
    answer = { status: 503, body: { error: "Ferry is still starting" } };
    assert.equal(await run("hold", "1xAAAA-000000000000-0000"), 75);
    assert.match(errors.at(-1)!, /answered 503: Ferry is still starting/);
    assert.equal(
      seen.at(-1),
      'POST /api/queue/hold Bearer t0ken-t0ken-t0ken {"ids":["1xAAAA-000000000000-0000"]}',
    );

    answer = {
      status: 400,
      body: { error: "invalid request", details: [{ path: "ids.0", message: "not a message id" }] },
    };
    assert.equal(await run("delete", "x"), 64);
    assert.match(errors.at(-1)!, /answered 400: invalid request\n {2}ids\.0: not a message id/);

    answer = { status: 401, body: { error: "invalid bearer token" } };
    assert.equal(await run("summary"), 77);
    assert.match(errors.at(-1)!, /refused the token: invalid bearer token/);

    answer = { status: 500, body: { error: "internal error" } };
    assert.equal(await run("flush", "example.test"), 70);
    assert.equal(seen.at(-1), 'POST /api/queue/flush Bearer t0ken-t0ken-t0ken {"domain":"example.test"}');

    answer = {
      status: 200,
      body: {
        results: [{ id: "a", ok: true, message: "held" }, {
          id: "b",
          ok: false,
          message: "not in the queue",
        }],
      },
    };
    assert.equal(await run("hold", "a", "b"), 1, "one refused");

    // --reason goes with the ids to the API (which logs it, and gives a bounce's in the failure report).
    answer = { status: 200, body: { results: [{ id: "a", ok: true, message: "bounced" }] } };
    assert.equal(await run("bounce", "--reason", "gone for good", "a"), 0);
    assert.equal(
      seen.at(-1),
      'POST /api/queue/bounce Bearer t0ken-t0ken-t0ken {"ids":["a"],"reason":"gone for good"}',
    );
    const asked = seen.length;
    assert.equal(await run("flush", "--reason", "x"), 64, "flush takes no reason");
    assert.match(errors.at(-1)!, /unknown option --reason/);
    assert.equal(await run("bounce", "--reason", " ", "a"), 64, "a blank reason");
    assert.match(errors.at(-1)!, /--reason: expected 1 to 500 characters/);
    assert.equal(await run("bounce", "--reason", "x".repeat(501), "a"), 64, "longer than the API takes");
    assert.equal(await run("bounce", "--because", "x", "a"), 64);
    assert.match(errors.at(-1)!, /unknown option --because/);
    assert.equal(seen.length, asked, "no usage error reached the API");
  } finally {
    console.error = orig.error;
    console.log = orig.log;
    await server.shutdown();
  }
});
