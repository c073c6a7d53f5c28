/**
 * config.ts is TypeScript: the function forms README documents (host lists, `auth.check`, `auth.senderLogins`,
 * `routes[].hosts`) get their documented parameters as types — this file only compiles if they do (the
 * `@ts-expect-error` line fails the type check if a parameter is typed `never` again) — and validate.
 */
import assert from "node:assert/strict";
import { defineConfig } from "../../mod.ts";
import { validateConfig } from "../../src/config/load.ts";
import { HostList } from "../../src/core/host_list.ts";

const config = defineConfig({
  relay: {
    domains: ({ name }, { signal }) => Promise.resolve(!signal.aborted && name === "example.org"),
    clients: ({ ip }) => ip?.startsWith("192.0.2.") ?? false,
  },
  auth: {
    check: ({ mechanism, user, authzid, password, client }) =>
      mechanism === "PLAIN" && user === "alice" && authzid === "" && password === "pw" &&
      client.ip === "127.0.0.1" && client.port > 0,
    senderLogins: (address) => (address.endsWith("@example.org") ? ["alice"] : undefined),
  },
  routes: [
    { name: "internal", domains: ["corp.example"], hosts: (domain) => [`mx.${domain.toLowerCase()}`] },
    { domains: "*", mx: true },
  ],
});

defineConfig({
  // @ts-expect-error: README's auth.check parameter is `user`, not `username`.
  auth: { check: ({ username }) => username === "alice" },
});

Deno.test("config types: documented function forms are typed, validate, and work", async () => {
  const c = validateConfig(config);
  const signal = new AbortController().signal;
  assert.equal(await new HostList(c.relay.domains).match({ name: "example.org" }, { signal }), true);
  assert.equal(await new HostList(c.relay.clients).match({ ip: "192.0.2.7" }), true);
  const check = c.auth!.check!;
  const request = { mechanism: "PLAIN", user: "alice", authzid: "", password: "pw" };
  assert.equal(await check({ ...request, client: { ip: "127.0.0.1", port: 4000 } }, { signal }), true);
  assert.equal(
    await check({ ...request, password: "no", client: { ip: "127.0.0.1", port: 4000 } }, { signal }),
    false,
  );
  const hosts = c.routes[0].hosts;
  assert.ok(typeof hosts === "function");
  assert.deepEqual(await hosts("Corp.Example"), ["mx.corp.example"]);
});
