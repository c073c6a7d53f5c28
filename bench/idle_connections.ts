/**
 * What idle connections cost: starts Ferry (bench/ferry.config.ts) as a child, opens N connections that
 * read the banner and then say nothing, and prints the child's resident memory before, with the
 * connections open, and after they closed. Usage: deno run --allow-all bench/idle_connections.ts [N=10000]
 *
 * @module
 */

import { startFerryChild } from "./_ferry.ts";

const n = Number(Deno.args[0] ?? 10_000);

/** VmRSS of `pid` in KiB (Linux). */
async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
}

/** The Ferry process: the only child of the `deno run` the harness started (or that process itself). */
function ferryPid(port: number): number {
  const out = new Deno.Command("ss", { args: ["-Hltnp", `sport = :${port}`] }).outputSync();
  const pid = /pid=(\d+)/.exec(new TextDecoder().decode(out.stdout))?.[1];
  if (!pid) throw new Error(`no process listens on ${port}`);
  return Number(pid);
}

async function banner(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(256);
  let got = "";
  while (!got.includes("\n")) {
    const r = await conn.read(buf);
    if (r === null) throw new Error(`closed before the banner: ${got}`);
    got += new TextDecoder().decode(buf.subarray(0, r));
  }
  if (!got.startsWith("220")) throw new Error(`no 220 banner: ${got}`);
}

const parent = await Deno.makeTempDir({ prefix: "ferry-bench-idle-" });
const target = await startFerryChild(parent, {
  tag: "idle",
  env: { FERRY_CONNECTIONS: String(n + 100) },
});
const conns: Deno.Conn[] = [];
try {
  const pid = ferryPid(target.port);
  const settle = () => new Promise((r) => setTimeout(r, 1000));
  await settle();
  const before = await rssKiB(pid);
  for (let i = 0; i < n; i += 200) {
    const batch = await Promise.all(
      Array.from(
        { length: Math.min(200, n - i) },
        () => Deno.connect({ hostname: target.host, port: target.port }),
      ),
    );
    await Promise.all(batch.map(banner));
    conns.push(...batch);
  }
  await settle();
  const open = await rssKiB(pid);
  for (const c of conns.splice(0)) c.close();
  await settle();
  const after = await rssKiB(pid);
  const per = ((open - before) * 1024) / n;
  console.log(
    `idle-connections: ${n} open: RSS ${before} KiB → ${open} KiB (${(per / 1024).toFixed(1)} KiB each), ` +
      `after close ${after} KiB`,
  );
} finally {
  for (const c of conns) c.close();
  await target.stop();
  await Deno.remove(parent, { recursive: true }).catch(() => {});
}
