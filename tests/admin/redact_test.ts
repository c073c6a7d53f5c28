/** redactConfig(): secrets found by key and by value, whatever the key they sit under. */

import assert from "node:assert/strict";
import { redactConfig } from "../../src/admin/redact.ts";

Deno.test("redactConfig() hides URL userinfo and PEM private keys under any key, and secret-named keys", () => {
  const pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n";
  const out = redactConfig({
    lookup: { url: "rediss://user:pw@cache.example:6380/2" },
    scanner: "http://admin:hunter2@127.0.0.1:11334/checkv2",
    plain: "http://127.0.0.1:11333",
    mail: "postmaster@example.org",
    keys: [pem, "/etc/ferry/dkim.key"],
    srs: { secrets: ["a", "b"], secretFile: "/etc/postsrsd.secret" },
    nested: [{ token: "abc" }],
  }) as Record<string, unknown>;
  assert.deepEqual(out, {
    lookup: { url: "rediss://[redacted]@cache.example:6380/2" },
    scanner: "http://[redacted]@127.0.0.1:11334/checkv2",
    plain: "http://127.0.0.1:11333",
    mail: "postmaster@example.org",
    keys: ["[redacted]", "/etc/ferry/dkim.key"],
    srs: { secrets: "[redacted]", secretFile: "/etc/postsrsd.secret" },
    nested: [{ token: "[redacted]" }],
  });
});
