/** Small file systems for the disk-full tests (mount needs root; those tests are skipped otherwise). */

import { statfsSync } from "node:fs";

/** Mounts a tmpfs of `size` (mount's syntax: "20m", "64k") on `dir`. */
export async function mountTmpfs(dir: string, size: string): Promise<void> {
  const out = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir] })
    .output();
  if (!out.success) throw new Error(`mount failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Unmounts `dir` (failures ignored: cleanup). */
export async function umount(dir: string): Promise<void> {
  await new Deno.Command("umount", { args: [dir] }).output();
}

/** Writes `path` until the file system refuses another octet. */
export function fillUp(path: string): void {
  const f = Deno.openSync(path, { write: true, create: true });
  try {
    for (const size of [1024 * 1024, 64 * 1024, 4096, 512, 1]) {
      const block = new Uint8Array(size);
      for (;;) {
        try {
          f.writeSync(block);
        } catch {
          break;
        }
      }
    }
  } finally {
    f.close();
  }
}

/** Octets available on the file system holding `dir` (statfs). */
export function availableBytes(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/** Octets used on the file system holding `dir` (statfs). */
export function usedBytes(dir: string): number {
  const s = statfsSync(dir);
  return (Number(s.blocks) - Number(s.bavail)) * Number(s.bsize);
}
