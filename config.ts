// Ferry's default configuration: what `deno task start` runs, and the example to copy.
// Every option and its default is listed in README.md ("Configuration").
import { defineConfig } from "./mod.ts";

export default defineConfig({
  // hostname: "mx.example.org",          // default: the OS host name
  listen: [{ address: "127.0.0.1", port: 2525 }],
  spool: { dir: "./var/spool" },
  relay: {
    domains: [], //                        domains we accept mail for from anyone
    clients: ["127.0.0.0/8", "::1"], //    clients that may relay to any domain
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
