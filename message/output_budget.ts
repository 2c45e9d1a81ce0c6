/**
 * The server-wide output budget: the bytes queued, over every connection, for
 * peers that have not read them yet. A limit per connection is a
 * multiplication (4 MiB × every connection); this states the total.
 *
 * @module
 */

/** The default total of bytes queued for every peer at once (64 MiB). */
export const DEFAULT_MAX_TOTAL_OUTPUT_BYTES = 64 * 1024 * 1024;

/**
 * What one connection may still queue while the budget is spent (64 KiB): a
 * peer that reads keeps working, since its replies leave as fast as they come;
 * only one that lets more than this pile up is a slow reader.
 */
export const SPENT_BUDGET_BYTES = 64 * 1024;

/**
 * Bytes queued for peers, counted by every connection that shares it.
 *
 * @example Sharing a budget
 * ```ts
 * import { OutputBudget } from "./output_budget.ts";
 * const budget = new OutputBudget(1024);
 * budget.queued += 2048;
 * console.assert(budget.spent);
 * ```
 */
export class OutputBudget {
  /** The most bytes queued in all before slow readers are stopped. */
  readonly limit: number;
  /** The bytes queued now, not counting coalesced notices. */
  queued = 0;

  /**
   * Creates an empty budget.
   *
   * @param limit The most bytes queued in all.
   */
  constructor(limit: number = DEFAULT_MAX_TOTAL_OUTPUT_BYTES) {
    this.limit = limit;
  }

  /** Whether more than the limit is queued. */
  get spent(): boolean {
    return this.queued > this.limit;
  }
}
