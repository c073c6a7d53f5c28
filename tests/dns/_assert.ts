/** Small assertions over node:assert/strict for the dns tests. */

import assertNode from "node:assert/strict";

/** Asserts a truthy value. */
export function assert(value: unknown, message?: string): asserts value {
  assertNode.ok(value, message);
}

/** Deep strict equality. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  assertNode.deepStrictEqual(actual, expected, message);
}

/** Awaits `fn()`, asserts it rejects with an instance of `type`, and returns the error. */
export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  type: new (...args: never[]) => E,
): Promise<E> {
  try {
    await fn();
  } catch (err) {
    assertNode.ok(err instanceof type, `expected ${type.name}, got ${err}`);
    return err as E;
  }
  assertNode.fail(`expected a rejection with ${type.name}`);
}
