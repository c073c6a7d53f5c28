/** Helpers for admin tests: a Ferry with its admin listener on a free port, fetch with or without the token. */

import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { freePort } from "../helpers/sink.ts";
import { waitFor as sharedWaitFor } from "../helpers/downstream.ts";
import { runSwaks, spoolIdIn } from "../helpers/peers.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryConfig } from "../../mod.ts";

/** A test Ferry with the admin listener on 127.0.0.1:0. */
export async function startAdminFerry(overrides: FerryConfig = {}): Promise<TestFerry & { base: string }> {
  const f = await startTestFerry({
    admin: { listen: "127.0.0.1:0", ...overrides.admin },
    ...withoutAdmin(overrides),
  });
  return { ...f, base: f.admin!.url };
}

function withoutAdmin(c: FerryConfig): FerryConfig {
  const { admin: _a, ...rest } = c;
  return rest;
}

/** Stops and removes a test Ferry. */
export async function stopFerry(f: TestFerry): Promise<void> {
  await f.stop();
  await Deno.remove(f.dir, { recursive: true }).catch(() => {});
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** GET/POST with the bearer token (or `token: null` for none); resolves to status and parsed body. */
export async function api(
  f: TestFerry & { base: string },
  path: string,
  opts: { method?: string; body?: unknown; token?: string | null; raw?: string } = {},
): Promise<{ status: number; body: Json; headers: Headers }> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? f.adminToken : opts.token;
  if (token !== null && token !== undefined) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined || opts.raw !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(f.base + path, {
    method: opts.method ?? "GET",
    headers,
    body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
  });
  const text = await res.text();
  let body: Json = text;
  try {
    body = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, body, headers: res.headers };
}

/** The shared poll (helpers/downstream.ts), with the longer wait the admin tests' Ferry processes need. */
export function waitFor(pred: () => boolean | Promise<boolean>, ms = 15000): Promise<void> {
  return sharedWaitFor(pred, ms);
}

/** A Ferry whose only route leads to a closed port: every message stays queued as deferred. */
export async function queueFerry(): Promise<TestFerry & { base: string; ids: string[] }> {
  const dead = await freePort();
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: [] },
    delivery: { enable: true },
    routes: [{ name: "dead", domains: "*", hosts: ["127.0.0.1"], port: dead }],
    admin: { listen: "127.0.0.1:0" },
  }, { resolver: new MemoryResolver() });
  const ids: string[] = [];
  for (
    const [from, to] of [["alice@a.test", "bob@example.test"], ["carol@c.test", "dave@example.test"], [
      "alice@a.test",
      "erin@example.test",
    ]]
  ) {
    const r = await runSwaks(f.port, ["--from", from, "--to", to, "--header", `Subject: to ${to}`]);
    ids.push(spoolIdIn(r.stdout)!);
  }
  // Each has had its first (failed) attempt.
  await waitFor(() => ["bob", "dave", "erin"].every((u) => f.memlog.has(`== ${u}@example.test`)));
  return { ...f, base: f.admin!.url, ids };
}
