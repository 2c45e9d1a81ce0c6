/**
 * A small seeded pseudo-random generator (mulberry32), so a torture run's
 * choices can be replayed from the seed it prints.
 *
 * @module
 */

/** Seeded random numbers. */
export class Random {
  #state: number;

  /**
   * @param seed Any integer.
   */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** @returns A number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** @returns An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** @returns A random element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}
