/**
 * Runs one stage's chain under a deadline. A step that never calls next() or never returns becomes a 451
 * naming the step; a step that throws something other than SmtpError becomes 451 4.3.0 and a log line.
 */

import { compose, type Middleware } from "../core/compose.ts";
import { SmtpError } from "../core/reply.ts";
import { errorMessage } from "../core/error_message.ts";
import { withinDeadline } from "../core/deadlines.ts";

/** Options for a stage run. */
export interface RunStageOptions {
  timeoutMs: number;
  /** Called for unexpected failures and timeouts */
  log: (text: string) => void;
  /** Runs after the whole chain called next() (built-in final step) */
  final?: () => Promise<void>;
  /** Aborted when the deadline passes, so a step still running (the context's `signal`) can stop its work */
  abort?: AbortController;
}

/** Runs a chain; resolves when accepted, throws SmtpError when rejected. */
export async function runStage<C>(
  stage: string,
  chain: readonly Middleware<C>[],
  ctx: C,
  opts: RunStageOptions,
): Promise<void> {
  if (chain.length === 0 && !opts.final) return;
  let current = "(chain)";
  const named = chain.map((m) => {
    const name = m.name || "anonymous";
    return async (c: C, next: () => Promise<void>) => {
      current = name;
      await m(c, async () => {
        await next();
        current = name;
      });
    };
  });
  try {
    await withinDeadline(compose(named)(ctx, opts.final), opts.timeoutMs, () => {
      const why = new Error(`policy step "${current}" at ${stage} took longer than ${opts.timeoutMs} ms`);
      opts.abort?.abort(why);
      return new SmtpError(451, "4.3.0", "Temporary local problem, please try again later", { cause: why });
    });
  } catch (err) {
    if (err instanceof SmtpError) {
      if (err.cause instanceof Error) opts.log(`${stage} policy: ${err.cause.message}`);
      throw err;
    }
    opts.log(`${stage} policy step "${current}" failed: ${errorMessage(err)}`);
    throw new SmtpError(451, "4.3.0", "Temporary local problem, please try again later", { cause: err });
  }
}
