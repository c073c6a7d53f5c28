// Ferry node configuration for compose.yaml: behind HAProxy (PROXY v2), Redis shared by the nodes.
// Relay domains live in the Redis set "relay_domains" (SADD relay_domains example.org) so both nodes agree.
import { defineConfig, redisSet, rspamd } from "./mod.ts";

export default defineConfig({
  hostname: Deno.env.get("FERRY_NODE") ?? "ferry",
  listen: [{ address: "0.0.0.0", port: 2525 }],
  spool: { dir: "./var/spool" },
  // Only HAProxy connects; it must send a PROXY v2 header (the compose network's addresses).
  proxyRequiredHosts: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
  relay: { domains: redisSet("relay_domains").hostList("name"), clients: [] },
  redis: { servers: [{ url: "redis://redis:6379" }], timeout: "1s" },
  // Content verdicts from the rspamd service (its normal worker's /checkv2).
  checks: [rspamd({ url: "http://rspamd:11333" })],
  // Each node's admin API stays on its own loopback (docker exec … curl to reach it).
  admin: { listen: "127.0.0.1:8025" },
});
