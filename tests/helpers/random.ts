/**
 * A seeded source of numbers in [0, 1) for tests that compare against a reference on random input: the same
 * seed gives the same cases on every run. A 32-bit linear congruential generator on Math.imul (plain `*`
 * loses the low bits past 2^53 and falls into a short cycle); its high bits, which are what a float from it
 * is made of, are the well-mixed ones.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 0x1_0000_0000;
  };
}
