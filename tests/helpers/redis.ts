/**
 * Test helper: Debian's redis-server on a free loopback port with its own temp dir, no persistence.
 * Ready means it answered PING; stop() kills it by PID and waits for its exit; start() again brings it back
 * on the same port (a Redis restarted mid-run). Needs the Debian package redis-server.
 */

import { freePort } from "./process.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A private redis-server. */
export class TestRedis {
  readonly port: number;
  readonly dir: string;
  /** `requirepass`, when the server wants one */
  readonly password?: string;
  #child?: Deno.ChildProcess;

  private constructor(port: number, dir: string, password?: string) {
    this.port = port;
    this.dir = dir;
    this.password = password;
  }

  /** Starts a redis-server on a free port (with `requirepass` when `password` is given). */
  static async start(opts: { password?: string } = {}): Promise<TestRedis> {
    const r = new TestRedis(freePort(), await Deno.makeTempDir({ prefix: "ferry-redis-" }), opts.password);
    await r.start();
    return r;
  }

  /** The URL Ferry's config takes. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** (Re)starts the server on its port and waits until it answers PING. */
  async start(): Promise<void> {
    if (this.#child) throw new Error("redis-server is already running");
    this.#child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--dir",
        this.dir,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        `${this.dir}/redis.log`,
        ...(this.password ? ["--requirepass", this.password] : []),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        if ((await this.command("PING")).startsWith("+PONG")) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error("redis-server did not answer PING within 15 s");
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Stops the server (SIGKILL by PID, as a crash would) and waits for its exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  }

  /** Stops the server and removes its directory. */
  async cleanup(): Promise<void> {
    await this.stop();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** Sends one command (on database 0) and returns the raw reply text. */
  command(...args: string[]): Promise<string> {
    return this.commandIn(0, ...args);
  }

  /** Sends one command on database `db` (after AUTH when there is a password); returns its raw reply. */
  async commandIn(db: number, ...args: string[]): Promise<string> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    try {
      const cmds = [
        ...(this.password ? [["AUTH", this.password]] : []),
        ...(db ? [["SELECT", String(db)]] : []),
        args,
      ];
      const req = cmds.map((c) =>
        `*${c.length}\r\n` + c.map((a) => `$${enc.encode(a).length}\r\n${a}\r\n`).join("")
      ).join("");
      await conn.write(enc.encode(req));
      // One reply line per command before ours (+OK); ours is whatever follows.
      let text = "";
      const buf = new Uint8Array(65536);
      while (text.split("\r\n").length <= cmds.length) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n));
      }
      return text.split("\r\n").slice(cmds.length - 1).join("\r\n");
    } finally {
      conn.close();
    }
  }
}
