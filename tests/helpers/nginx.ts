/**
 * Test helper: a private nginx (Debian's nginx-light) serving MTA-STS policies over HTTPS on a free loopback
 * port, one `server` block per policy host (SNI), each with its own certificate and behaviour. Started in
 * the foreground and stopped by its PID.
 */

import { freePort } from "./process.ts";

/** One policy host. */
export interface PolicySite {
  /** The host name, e.g. "mta-sts.example.test" */
  host: string;
  certFile: string;
  keyFile: string;
  /** The body served at /.well-known/mta-sts.txt */
  body?: string;
  /** Content type (default text/plain) */
  contentType?: string;
  /** Answer with a redirect to this URL instead */
  redirectTo?: string;
  /** Answer every request with this HTTP status (e.g. 500) instead */
  status?: number;
}

/** A running nginx. */
export interface Nginx {
  port: number;
  dir: string;
  /** Replaces a site's policy body (nginx serves files, so no reload is needed) */
  setBody(host: string, body: string): Promise<void>;
  /** How many policy requests nginx has logged for `host` so far (its access log, written per request) */
  requests(host: string): Promise<number>;
  stop(): Promise<void>;
}

/** Starts nginx with `sites`; stop it in a finally block. */
export async function startNginx(sites: PolicySite[]): Promise<Nginx> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-nginx-" });
  const port = freePort();
  const servers: string[] = [];
  for (const s of sites) {
    const root = `${dir}/${s.host}`;
    await Deno.mkdir(`${root}/.well-known`, { recursive: true });
    await Deno.writeTextFile(`${root}/.well-known/mta-sts.txt`, s.body ?? "");
    servers.push([
      "  server {",
      `    listen 127.0.0.1:${port} ssl;`,
      `    server_name ${s.host};`,
      `    ssl_certificate ${s.certFile};`,
      `    ssl_certificate_key ${s.keyFile};`,
      `    root ${root};`,
      `    default_type ${s.contentType ?? "text/plain"};`,
      s.redirectTo ? `    location / { return 301 ${s.redirectTo}; }` : "",
      s.status ? `    location / { return ${s.status}; }` : "",
      "  }",
    ].join("\n"));
  }
  const conf = [
    "worker_processes 1;",
    "daemon off;",
    "user root;",
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log;`,
    "events { worker_connections 64; }",
    "http {",
    "  log_format byhost '$host $status $request_uri';",
    `  access_log ${dir}/access.log byhost;`,
    `  client_body_temp_path ${dir}/tmp-body;`,
    `  proxy_temp_path ${dir}/tmp-proxy;`,
    `  fastcgi_temp_path ${dir}/tmp-fcgi;`,
    `  uwsgi_temp_path ${dir}/tmp-uwsgi;`,
    `  scgi_temp_path ${dir}/tmp-scgi;`,
    ...servers,
    "}",
    "",
  ].join("\n");
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const child = new Deno.Command("nginx", {
    args: ["-p", dir, "-c", `${dir}/nginx.conf`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  const stop = async () => {
    if (!exited) {
      try {
        child.kill("SIGQUIT");
      } catch { /* gone */ }
    }
    await status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 5000;
  while (!exited && Date.now() < deadline) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return {
        port,
        dir,
        setBody: (host, body) => Deno.writeTextFile(`${dir}/${host}/.well-known/mta-sts.txt`, body),
        requests: async (host) =>
          (await Deno.readTextFile(`${dir}/access.log`).catch(() => "")).split("\n").filter((l) =>
            l.startsWith(`${host} `) && l.endsWith(" /.well-known/mta-sts.txt")
          ).length,
        stop,
      };
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const log = await Deno.readTextFile(`${dir}/error.log`).catch(() => "");
  await stop();
  throw new Error(`nginx did not start: ${log}`);
}
