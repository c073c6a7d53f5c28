/**
 * Test helper: Debian's rspamd 3.4 run from a temp config dir on a free loopback port (recipe:
 * shared/recipes/real-peers.md). Offline and deterministic: DNS goes to a dead loopback port, the public
 * suffix list is two lines, GTUBE patterns are on. A test rule FERRY_TEST (score 20: reject) fires on the
 * body text "FERRY-TEST-SPAM", FERRY_HEADER (score 7: add header) on "FERRY-TEST-HEADER", FERRY_GREY (score 4.5:
 * greylist) on "FERRY-TEST-GREY", FERRY_SUBJECT (score 10: rewrite subject) on "FERRY-TEST-SUBJECT"; the settings id
 * "lenient" disables both and "medium" only FERRY_TEST, so recipients with different settings get different
 * verdicts.
 * milter_headers adds X-Spam-Status and X-Rspamd-Queue-Id (the Queue-Id rspamd was given), so header edits
 * come back in `milter`.
 */

import { freePort } from "./process.ts";

/** A running rspamd. */
export interface TestRspamd {
  url: string;
  dir: string;
  stop(): Promise<void>;
}

/** Starts rspamd; ready when /ping answers. */
export async function startRspamd(): Promise<TestRspamd> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-rspamd-" });
  const port = freePort();
  const dead = freePort();
  const local = `${dir}/local`;
  for (const d of ["local/override.d", "local/local.d", "db", "run", "log"]) {
    await Deno.mkdir(`${dir}/${d}`, { recursive: true });
  }
  await Deno.writeTextFile(`${dir}/tld.dat`, "test\nexample\n");
  await Deno.writeTextFile(
    `${dir}/rspamd.conf`,
    `.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}
logging {
  type = "file";
  filename = "$LOGDIR/rspamd.log";
  level = "warning";
}
worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  .include "$CONFDIR/worker-normal.inc"
  count = 1;
}
`,
  );
  await Deno.writeTextFile(
    `${local}/override.d/options.inc`,
    `url_tld = "${dir}/tld.dat";
dns { nameserver = ["127.0.0.1:${dead}"]; timeout = 0.2s; retransmits = 1; }
enable_test_patterns = true;
`,
  );
  // Modules that would only time out on the dead DNS port: off, so scores do not depend on timing.
  for (
    const m of ["rbl", "hfilter", "spf", "dkim", "dmarc", "arc", "asn", "mx_check", "fuzzy_check", "phishing"]
  ) {
    await Deno.writeTextFile(`${local}/override.d/${m}.conf`, "enabled = false;\n");
  }
  await Deno.writeTextFile(
    `${local}/local.d/settings.conf`,
    `lenient { id = "lenient"; apply { symbols_disabled = ["FERRY_TEST", "FERRY_HEADER"]; } }\n` +
      `medium { id = "medium"; apply { symbols_disabled = ["FERRY_TEST"]; } }\n`,
  );
  // Thresholds as shipped (greylist 4, add header 6, reject 15) plus rewrite subject at 9.
  await Deno.writeTextFile(`${local}/local.d/actions.conf`, "rewrite_subject = 9;\n");
  await Deno.writeTextFile(
    `${local}/local.d/milter_headers.conf`,
    `use = ["x-spam-status", "x-rspamd-queue-id"];\nskip_authenticated = false;\nskip_local = false;\n`,
  );
  await Deno.writeTextFile(
    `${local}/rspamd.local.lua`,
    `local function body_has(task, needle)
  local content = task:get_rawbody()
  return content and tostring(content):find(needle, 1, true) ~= nil
end
rspamd_config:register_symbol({ name = 'FERRY_TEST', score = 20.0, group = 'ferry',
  callback = function(task) return body_has(task, 'FERRY-TEST-SPAM') end })
rspamd_config:register_symbol({ name = 'FERRY_HEADER', score = 7.0, group = 'ferry',
  callback = function(task) return body_has(task, 'FERRY-TEST-HEADER') end })
rspamd_config:register_symbol({ name = 'FERRY_GREY', score = 4.5, group = 'ferry',
  callback = function(task) return body_has(task, 'FERRY-TEST-GREY') end })
rspamd_config:register_symbol({ name = 'FERRY_SUBJECT', score = 10.0, group = 'ferry',
  callback = function(task) return body_has(task, 'FERRY-TEST-SUBJECT') end })
-- Echoes what the request told rspamd, so a test can see every fact arrive.
rspamd_config:register_symbol({ name = 'FERRY_FACTS', score = 0.0, group = 'ferry',
  callback = function(task)
    local function hdr(n) local h = task:get_request_header(n); return h and tostring(h) or '-' end
    local from = task:get_from('smtp')
    local rcpts = {}
    for _, r in ipairs(task:get_recipients('smtp') or {}) do table.insert(rcpts, r.addr) end
    return true, 'ip=' .. tostring(task:get_from_ip()), 'helo=' .. (task:get_helo() or '-'),
      'hostname=' .. (task:get_hostname() or '-'), 'user=' .. (task:get_user() or '-'),
      'queue=' .. (task:get_queue_id() or '-'), 'from=' .. ((from and from[1] and from[1].addr) or '-'),
      'rcpt=' .. table.concat(rcpts, ' '), 'cipher=' .. hdr('TLS-Cipher'), 'version=' .. hdr('TLS-Version')
  end })
`,
  );
  const child = new Deno.Command("rspamd", {
    args: [
      "-f",
      "-i",
      "-u",
      "root",
      "-g",
      "root",
      "-c",
      `${dir}/rspamd.conf`,
      `--var=LOCAL_CONFDIR=${local}`,
      `--var=DBDIR=${dir}/db`,
      `--var=RUNDIR=${dir}/run`,
      `--var=LOGDIR=${dir}/log`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const res = await fetch(`${url}/ping`);
      const text = await res.text();
      if (res.ok && text.includes("pong")) return { url, dir, stop };
    } catch { /* not yet */ }
    if (Date.now() > deadline) {
      const log = await Deno.readTextFile(`${dir}/log/rspamd.log`).catch(() => "");
      await stop();
      throw new Error(`rspamd did not answer /ping within 60 s; log:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
