/**
 * Ferry configuration used by the benchmark (bench/main.ts). Port, spool and log paths come from the
 * environment the harness sets: FERRY_PORT, FERRY_SPOOL, FERRY_LOG. Relays for bench.test from loopback
 * only; the spool is durable (fsync before 250).
 *
 * - Default (inbound-accept): delivery off, as the Postfix peer holds its queue: accept-to-queue only.
 * - FERRY_DELIVER_TO=127.0.0.1:PORT (relay): delivery on, bench.test routed to that one host (a host
 *   route with an IP literal: no DNS query at all).
 * - FERRY_TLS_CERT / FERRY_TLS_KEY (starttls): one certificate set, STARTTLS offered to every client.
 * - FERRY_CONNECTIONS=N (idle-connections): N connections in total and from one address.
 * - FERRY_RETRY_EVERY=DUR (queue): one retry rule, every DUR, so nothing is retried while measured.
 * - FERRY_MX_PORT=PORT with FERRY_DNS=127.0.0.1:PORT (bench:dane): delivery on, bench.test routed by MX on
 *   that port, resolved by the resolver at FERRY_DNS; FERRY_DANE=off turns DANE off (hostsTryDane empty).
 *
 * Unless FERRY_DNS names a loopback resolver, the DNS client is pointed at 127.0.0.1:9 (discard), so no query
 * can ever leave the machine through /etc/resolv.conf.
 */
import { defineConfig } from "../mod.ts";

const deliverTo = Deno.env.get("FERRY_DELIVER_TO");
const cert = Deno.env.get("FERRY_TLS_CERT");
const key = Deno.env.get("FERRY_TLS_KEY");
const connections = Deno.env.get("FERRY_CONNECTIONS");
// bench:queue: retries this far apart, so nothing is retried while the queue is measured.
const retryEvery = Deno.env.get("FERRY_RETRY_EVERY");
// bench:dane: MX routing through a loopback resolver (unbound with a signed zone), DANE on or off.
const mxPort = Deno.env.get("FERRY_MX_PORT");
const [dnsHost, dnsPort] = (Deno.env.get("FERRY_DNS") ?? "127.0.0.1:9").split(":");
const daneOff = Deno.env.get("FERRY_DANE") === "off";

export default defineConfig({
  hostname: "ferry.bench.test",
  listen: [{ address: "127.0.0.1", port: Number(Deno.env.get("FERRY_PORT")) }],
  spool: { dir: Deno.env.get("FERRY_SPOOL")! },
  relay: { domains: ["bench.test"], clients: ["127.0.0.0/8"] },
  // 50 load sessions plus the readiness probe all come from 127.0.0.1; FERRY_CONNECTIONS raises both
  // limits for the idle-connections bench.
  limits: connections
    ? { connections: Number(connections), connectionsPerIp: Number(connections) }
    : { connectionsPerIp: 500 },
  delivery: deliverTo || mxPort
    ? {
      enable: true,
      concurrency: 100,
      connectionsPerHost: 50,
      destinationConcurrency: 50,
      ...(daneOff ? { hostsTryDane: [] } : {}),
    }
    : { enable: false },
  ...(retryEvery ? { retry: [{ domains: "*", rules: [{ every: retryEvery, until: "4d" }] }] } : {}),
  routes: deliverTo
    ? [{ domains: "bench.test", hosts: [deliverTo] }]
    : mxPort
    ? [{ domains: "bench.test", mx: true, port: Number(mxPort) }]
    : [],
  dns: { nameservers: [{ address: dnsHost, port: Number(dnsPort) }] },
  admin: { listen: "127.0.0.1:0" },
  ...(cert && key ? { tls: { certificates: [{ cert, key }] } } : {}),
  log: { file: Deno.env.get("FERRY_LOG") ?? `${Deno.env.get("FERRY_SPOOL")}.log` },
});
