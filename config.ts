// Ferry's default configuration: what `deno task start` runs, and the example to copy.
// Every option and its default is listed in README.md ("Configuration").
import { defineConfig } from "./mod.ts";

// The container image runs this file too: its Dockerfile sets FERRY_LISTEN_ADDRESS=0.0.0.0, so Ferry listens
// on the port the image EXPOSEs; `docker run -e FERRY_RELAY_DOMAINS=example.org` (comma-separated) adds relay
// domains, FERRY_RELAY_CLIENTS relay clients. Outside a container none of them is set.
const list = (name: string) => (Deno.env.get(name) ?? "").split(",").map((s) => s.trim()).filter(Boolean);

export default defineConfig({
  // hostname: "mx.example.org",          // default: the OS host name
  listen: [{
    address: Deno.env.get("FERRY_LISTEN_ADDRESS") ?? "127.0.0.1",
    port: Number(Deno.env.get("FERRY_LISTEN_PORT") ?? 2525),
  }],
  spool: { dir: "./var/spool" },
  relay: {
    // Domains we accept mail for from anyone.
    domains: list("FERRY_RELAY_DOMAINS"),
    // Clients that may relay to any domain.
    clients: ["127.0.0.0/8", "::1", ...list("FERRY_RELAY_CLIENTS")],
  },
  // Message authentication (README "Checks"): import { arc, dkim, dmarc, spf } from "./mod.ts", then
  // checks: [spf(), dkim(), arc(), dmarc()],
  // dkim: { sign: [{ domain: "example.org", selector: "s1", keyFile: "./keys/s1.pem" }] },
  // srs: { domain: "srs.example.org", secretFile: "./keys/srs-secrets" },
  policy: {
    rcpt: [
      // Example: refuse one local part everywhere.
      async function no_noreply(c, next) {
        if (c.recipient.local.toLowerCase() === "noreply") c.reject("No such user here", 550, "5.1.1");
        await next();
      },
    ],
  },
});
