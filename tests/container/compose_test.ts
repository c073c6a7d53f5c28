/**
 * compose.yaml without a Docker engine: what can be checked for real is. The file parses (YAML with its merge
 * key); every file it mounts exists; the HAProxy config it mounts passes `haproxy -c` (Debian's HAProxy 2.6,
 * the image's version); the node config it mounts validates with Ferry's own loader for each node's
 * environment; and the pieces agree: HAProxy's servers are the Ferry services at the port the nodes listen on,
 * with PROXY v2 where the nodes require it; the published port reaches HAProxy's bind; each node's spool is the
 * image's volume and its own; every host the node config names is a compose service. `docker compose up`
 * itself has not been run (README.md says so).
 */

import assert from "node:assert/strict";
import { parse } from "yaml";
import { loadConfigFile } from "../../src/config/load.ts";
import { REPO_DIR } from "../helpers/process.ts";

// deno-lint-ignore no-explicit-any
type Yaml = any;

const repo = (p: string) => `${REPO_DIR}${p.replace(/^\.\//, "")}`;

async function compose(): Promise<Yaml> {
  return parse(await Deno.readTextFile(repo("compose.yaml")), { merge: true });
}

/** `host:container[:ro]` volume entries as { source, target }. */
function mounts(service: Yaml): { source: string; target: string }[] {
  return (service.volumes ?? []).map((v: string) => {
    const [source, target] = v.split(":");
    return { source, target };
  });
}

const isBind = (source: string) => source.startsWith("./") || source.startsWith("/");

/** The Dockerfile's instructions we rely on. */
async function dockerfile(): Promise<
  { workdir: string; volumes: string[]; expose: number[]; cmd: string[] }
> {
  const text = await Deno.readTextFile(repo("Dockerfile"));
  const one = (re: RegExp) => {
    const m = re.exec(text);
    assert.ok(m, `Dockerfile has ${re}`);
    return m[1];
  };
  return {
    workdir: one(/^WORKDIR (\S+)$/m),
    volumes: JSON.parse(one(/^VOLUME (\[.*\])$/m)),
    expose: one(/^EXPOSE (.+)$/m).split(/\s+/).map(Number),
    cmd: JSON.parse(one(/^CMD (\[.*\])$/m)),
  };
}

/** The HAProxy config's frontend bind port and backend servers. */
function haproxyLayout(
  text: string,
): { bindPort: number; servers: { host: string; port: number; opts: string[] }[] } {
  const bind = /^\s*bind\s+\S*:(\d+)/m.exec(text);
  assert.ok(bind, "a frontend bind");
  const servers = [...text.matchAll(/^\s*server\s+\S+\s+([\w.-]+):(\d+)(.*)$/gm)].map((m) => ({
    host: m[1],
    port: Number(m[2]),
    opts: m[3].trim().split(/\s+/),
  }));
  return { bindPort: Number(bind[1]), servers };
}

Deno.test("compose.yaml: every mounted file exists, services, volumes and dependencies are declared", async () => {
  const c = await compose();
  const names = Object.keys(c.services).sort();
  assert.deepEqual(names, ["ferry1", "ferry2", "haproxy", "redis", "rspamd"]);
  for (const [name, s] of Object.entries<Yaml>(c.services)) {
    for (const dep of s.depends_on ?? []) assert.ok(c.services[dep], `${name} depends on unknown ${dep}`);
    for (const { source, target } of mounts(s)) {
      assert.ok(target?.startsWith("/"), `${name}: ${source} mounted at an absolute path`);
      if (isBind(source)) {
        const st = await Deno.stat(repo(source));
        assert.ok(st.isFile, `${name}: ${source} is a file in the repository`);
      } else {
        assert.ok(source in (c.volumes ?? {}), `${name}: named volume ${source} is declared`);
      }
    }
    if (s.build !== undefined) {
      assert.equal(s.build, ".");
      assert.ok((await Deno.stat(repo("Dockerfile"))).isFile);
    } else {
      assert.match(s.image, /^[\w./-]+:[\w.-]+$/, `${name}: a pinned image tag`);
    }
  }
  // The merge key gave ferry2 the node's build and grace period, with its own volumes and name.
  assert.equal(c.services.ferry2.build, ".");
  assert.equal(c.services.ferry2.stop_grace_period, c.services.ferry1.stop_grace_period);
  assert.equal(c.services.ferry2.environment.FERRY_NODE, "ferry2");
});

Deno.test("compose.yaml: the mounted HAProxy config passes haproxy -c and sends PROXY v2 to every Ferry node at its port", async () => {
  const c = await compose();
  const [mount] = mounts(c.services.haproxy).filter((m) => isBind(m.source));
  // The haproxy image reads this path by default.
  assert.equal(mount.target, "/usr/local/etc/haproxy/haproxy.cfg");
  const out = await new Deno.Command("haproxy", { args: ["-c", "-f", repo(mount.source)] }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /Configuration file is valid/);
  // Outside compose the node names do not resolve: the only warnings allowed say so (init-addr none).
  const warnings = text.split("\n").filter((l) => l.includes("[WARNING]"));
  for (const w of warnings) assert.match(w, /could not resolve address 'ferry[12]', disabling server/);

  const cfg = haproxyLayout(await Deno.readTextFile(repo(mount.source)));
  const ferryServices = Object.entries<Yaml>(c.services).filter(([, s]) => s.build === ".").map(([n]) => n);
  assert.deepEqual(cfg.servers.map((s) => s.host).sort(), ferryServices.sort(), "every node, nothing else");
  for (const s of cfg.servers) assert.ok(s.opts.includes("send-proxy-v2"), `${s.host} gets PROXY v2`);
  // Mail published on the host's port 25 arrives at HAProxy's bind.
  const published = (c.services.haproxy.ports as string[]).map((p) => p.split(":").map(Number));
  assert.deepEqual(published, [[25, cfg.bindPort]]);
});

Deno.test("compose.yaml: the mounted node config validates for each node and agrees with HAProxy, the image and the services", async () => {
  const c = await compose();
  const image = await dockerfile();
  const haproxyCfg = haproxyLayout(
    await Deno.readTextFile(repo(mounts(c.services.haproxy).find((m) => isBind(m.source))!.source)),
  );
  const tmp = await Deno.makeTempDir({ prefix: "ferry-compose-" });
  const spools = new Set<string>();
  const hostnames = new Set<string>();
  try {
    for (const node of ["ferry1", "ferry2"]) {
      const s = c.services[node];
      const configMount = mounts(s).find((m) => isBind(m.source))!;
      // The image runs `mod.ts --config config.ts` in WORKDIR: the mount must land there.
      assert.equal(configMount.target, `${image.workdir}/config.ts`);
      assert.deepEqual(image.cmd.slice(-3), ["mod.ts", "--config", "config.ts"]);
      // Loaded as the container does: its `./mod.ts` is the application's mod.ts beside it.
      const source = await Deno.readTextFile(repo(configMount.source));
      assert.match(source, /from "\.\/mod\.ts"/);
      const copy = `${tmp}/${node}.config.ts`;
      await Deno.writeTextFile(copy, source.replace(`"./mod.ts"`, JSON.stringify(`${REPO_DIR}mod.ts`)));
      const before = Deno.env.get("FERRY_NODE");
      let config;
      try {
        for (const [k, v] of Object.entries<string>(s.environment ?? {})) Deno.env.set(k, v);
        config = await loadConfigFile(copy);
      } finally {
        if (before === undefined) Deno.env.delete("FERRY_NODE");
        else Deno.env.set("FERRY_NODE", before);
      }
      hostnames.add(config.hostname!);

      // HAProxy reaches the node on every interface at the port it names, with PROXY v2 the node requires
      // from the compose network (Docker's default bridge ranges are private).
      assert.deepEqual(config.listen.map((l) => [l.address, l.port]), [[
        "0.0.0.0",
        haproxyCfg.servers[0].port,
      ]]);
      assert.ok(image.expose.includes(haproxyCfg.servers[0].port), "the image exposes the node port");
      assert.ok(config.proxyRequiredHosts.length > 0);
      for (const net of ["172.16.0.0/12", "10.0.0.0/8", "192.168.0.0/16"]) {
        assert.ok(JSON.stringify(config.proxyRequiredHosts).includes(net), `PROXY required from ${net}`);
      }

      // The spool is the image's volume, on a named volume of this node only.
      const spoolDir = config.spool.dir.startsWith("/")
        ? config.spool.dir
        : `${image.workdir}/${config.spool.dir.replace(/^\.\//, "")}`;
      assert.deepEqual(image.volumes, [spoolDir]);
      const spoolMount = mounts(s).find((m) => m.target === spoolDir);
      assert.ok(spoolMount && !isBind(spoolMount.source), `${node}: a named volume at ${spoolDir}`);
      spools.add(spoolMount.source);

      // The admin API stays inside the container (`docker compose exec ferry1 deno task queue list`).
      assert.match(config.admin.listen, /^127\.0\.0\.1:/);
      // Redis is the compose service, at its default port (its command sets no other).
      assert.deepEqual(config.redis?.servers.map((r) => new URL(r.url).host), ["redis:6379"]);
      assert.ok(!c.services.redis.command.includes("--port"));
    }
    assert.equal(spools.size, 2, "each node keeps its own spool");
    assert.deepEqual([...hostnames].sort(), ["ferry1", "ferry2"], "each node names itself");

    // Every service the node config reaches by URL exists in compose.
    const source = await Deno.readTextFile(repo("deploy/ferry.config.ts"));
    const hosts = [...source.matchAll(/\b[a-z]+:\/\/([a-z0-9-]+):\d+/g)].map((m) => m[1]);
    assert.deepEqual(hosts.sort(), ["redis", "rspamd"]);
    for (const h of hosts) assert.ok(c.services[h], `${h} is a compose service`);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
