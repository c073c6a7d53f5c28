/** JSON error bodies and Zod validation for the admin API: `{ error, details? }` with a fitting status. */

import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { z } from "zod";

/** Answers `{ error, details }` with `status`. */
export function jsonError(
  c: Context,
  status: ContentfulStatusCode,
  error: string,
  details?: unknown,
): Response {
  return c.json(details === undefined ? { error } : { error, details }, status);
}

/** Validates `value` with `schema`; on failure answers 400 with the problems (path and message each). */
export function validate<T extends z.ZodType>(
  c: Context,
  schema: T,
  value: unknown,
): { ok: true; value: z.output<T> } | { ok: false; response: Response } {
  const r = schema.safeParse(value);
  if (r.success) return { ok: true, value: r.data };
  const details = r.error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
  return { ok: false, response: jsonError(c, 400, "invalid request", details) };
}

/** Reads a JSON body (an empty body is `{}`); undefined when it is not JSON. */
export async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Reads a form body (urlencoded or multipart) as its string fields; undefined when it is not one. */
export async function readForm(c: Context): Promise<Record<string, string> | undefined> {
  let form;
  try {
    form = await c.req.parseBody();
  } catch {
    return undefined;
  }
  const fields: Record<string, string> = {};
  for (const [k, v] of Object.entries(form)) if (typeof v === "string") fields[k] = v;
  return fields;
}

/**
 * Answers 200 with `value` after checking it against the response schema `schema`; a mismatch is a bug
 * on our side and throws (the app answers 500 and logs it).
 */
export function jsonChecked<T extends z.ZodType>(c: Context, schema: T, value: unknown): Response {
  return c.json(schema.parse(value) as Record<string, unknown>);
}
