/**
 * Ferry configuration used by the inbound-accept benchmark (bench/main.ts).
 * Port, spool and log paths come from the environment the harness sets: FERRY_PORT, FERRY_SPOOL,
 * FERRY_LOG. Relays for bench.test from loopback only; the spool is durable (fsync before 250).
 * Delivery is off, as the Postfix peer holds its queue: the bench measures accept-to-queue only,
 * and no DNS query leaves the machine.
 */
import { defineConfig } from "../mod.ts";

export default defineConfig({
  hostname: "ferry.bench.test",
  listen: [{ address: "127.0.0.1", port: Number(Deno.env.get("FERRY_PORT")) }],
  spool: { dir: Deno.env.get("FERRY_SPOOL")! },
  relay: { domains: ["bench.test"], clients: ["127.0.0.0/8"] },
  // 50 load sessions plus the readiness probe all come from 127.0.0.1.
  limits: { connectionsPerIp: 500 },
  delivery: { enable: false },
  log: { file: Deno.env.get("FERRY_LOG") ?? `${Deno.env.get("FERRY_SPOOL")}.log` },
});
