/**
 * Latency samples, percentiles and Jain's fairness index. Pure: no I/O.
 *
 * @module
 */

/** Percentiles of a set of samples, in the samples' unit. */
export interface Summary {
  /** How many samples. */
  count: number;
  /** The mean. */
  mean: number;
  /** The median. */
  p50: number;
  /** The 99th percentile. */
  p99: number;
  /** The largest sample. */
  max: number;
}

/**
 * A growable array of numbers that allocates only when it doubles, so that
 * recording a sample on the hot path costs a store.
 */
export class Samples {
  #values: Float64Array;
  #length = 0;

  /** @param capacity The starting capacity. */
  constructor(capacity = 1 << 16) {
    this.#values = new Float64Array(capacity);
  }

  /** How many samples were recorded. */
  get length(): number {
    return this.#length;
  }

  /**
   * Records one sample.
   *
   * @param value The sample.
   */
  push(value: number): void {
    if (this.#length === this.#values.length) {
      const grown = new Float64Array(this.#values.length * 2);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.#length++] = value;
  }

  /**
   * Sorts a copy and reads its percentiles.
   *
   * @returns The summary; all zero when empty.
   */
  summary(): Summary {
    const n = this.#length;
    if (n === 0) return { count: 0, mean: 0, p50: 0, p99: 0, max: 0 };
    const sorted = this.#values.slice(0, n).sort();
    let sum = 0;
    for (let i = 0; i < n; i++) sum += sorted[i]!;
    return {
      count: n,
      mean: sum / n,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      max: sorted[n - 1]!,
    };
  }
}

/**
 * The nearest-rank percentile of sorted values.
 *
 * @param sorted Values in ascending order, at least one.
 * @param p The fraction, from 0 to 1.
 * @returns The smallest value with at least `p` of the values at or below it.
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

/**
 * Jain's fairness index: 1 when every client got the same share, 1/n when one
 * client got everything.
 *
 * @param counts Each client's share.
 * @returns The index, from 1/n to 1; 1 for no clients or no grants.
 */
export function jain(counts: readonly number[]): number {
  let sum = 0;
  let squares = 0;
  for (const count of counts) {
    sum += count;
    squares += count * count;
  }
  return squares === 0 ? 1 : (sum * sum) / (counts.length * squares);
}

/**
 * The median of some numbers.
 *
 * @param values At least one number.
 * @returns The middle value (the lower middle for an even count).
 */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/**
 * Rounds to a number of decimal digits, for the JSON the driver prints.
 *
 * @param value The number.
 * @param digits How many digits after the point.
 * @returns The rounded number.
 */
export function round(value: number, digits = 3): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/**
 * A summary with every figure rounded to three decimal digits.
 *
 * @param summary The summary.
 * @returns Its rounded copy.
 */
export function roundSummary(summary: Summary): Summary {
  return {
    count: summary.count,
    mean: round(summary.mean),
    p50: round(summary.p50),
    p99: round(summary.p99),
    max: round(summary.max),
  };
}
