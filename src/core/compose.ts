/**
 * The middleware engine: an ordered chain of `(ctx, next)` functions, Hono-style.
 * A second call to `next()` from one middleware is a bug and throws.
 */

/** A step in a chain: do work, optionally call `next()` to run the rest. */
export type Middleware<C> = (ctx: C, next: () => Promise<void>) => Promise<void> | void;

/** Composes middleware into one function that runs them in order, ending with `final` if all call next(). */
export function compose<C>(
  chain: readonly Middleware<C>[],
): (ctx: C, final?: () => Promise<void>) => Promise<void> {
  return function run(ctx, final) {
    let index = -1;
    function dispatch(i: number): Promise<void> {
      if (i <= index) return Promise.reject(new Error("next() called more than once"));
      index = i;
      const fn = i < chain.length ? chain[i] : undefined;
      if (!fn) return final ? final() : Promise.resolve();
      try {
        return Promise.resolve(fn(ctx, () => dispatch(i + 1)));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return dispatch(0);
  };
}
