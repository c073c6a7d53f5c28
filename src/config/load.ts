/** Loading config.ts and turning validation problems into one clear line each (`listen[1].port: …`). */

import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { z } from "zod";
import { configSchema, type ResolvedConfig } from "./schema.ts";
import { EVENT_NAMES, EVENT_PREFIXES } from "../core/event_names.ts";

/** A configuration that cannot be used; `problems` has one line per problem, each naming its path. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** Formats a Zod path as `listen[1].port`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out || "(config)";
}

function describe(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") {
    const events = issue.path.at(-1) === "events" &&
      (issue.path.length === 1 || (issue.path.length === 3 && issue.path[0] === "routes"));
    const what = events
      ? `unknown event (known: ${EVENT_NAMES.join(", ")}; prefixes: ${EVENT_PREFIXES.join(", ")})`
      : "unknown option";
    return issue.keys.map((k) => `${formatPath([...issue.path, k])}: ${what}`).join("\n");
  }
  if (issue.code === "invalid_union") {
    const inner = issue.errors.flat()[0];
    if (inner && inner.code === "custom") return `${formatPath(issue.path)}: ${inner.message}`;
  }
  return `${formatPath(issue.path)}: ${issue.message}`;
}

/** Validates a configuration object; throws ConfigError listing every problem. */
export function validateConfig(input: unknown): ResolvedConfig {
  const result = configSchema.safeParse(input ?? {});
  if (result.success) return result.data;
  const lines = result.error.issues.flatMap((i) => describe(i).split("\n"));
  throw new ConfigError([...new Set(lines)]);
}

/** Imports a config file (its default export) and validates it. Import failures become ConfigErrors too. */
export async function loadConfigFile(path: string): Promise<ResolvedConfig> {
  const url = pathToFileURL(resolve(path)).href;
  let mod: { default?: unknown };
  try {
    await Deno.stat(path);
  } catch {
    throw new ConfigError([`${path}: config file not found`]);
  }
  try {
    mod = await import(url);
  } catch (err) {
    const msg = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new ConfigError([`${path}: cannot load: ${msg}`]);
  }
  if (mod.default === undefined) {
    throw new ConfigError([`${path}: no default export (use export default defineConfig({...}))`]);
  }
  return validateConfig(mod.default);
}
