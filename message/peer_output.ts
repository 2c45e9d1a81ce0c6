/**
 * What a connection has queued for its peer, and what it costs: frames sent
 * and not yet written, counted toward the connection's cap and the server's
 * budget, and notices, at most one per key, which count toward neither.
 *
 * @module
 */

import { FrameEncoder } from "../protocol/frame.ts";
import { type OutputBudget, SPENT_BUDGET_BYTES } from "./output_budget.ts";

/** The output queue of one connection. */
export class PeerOutput {
  readonly #encoder = new FrameEncoder();
  /**
   * The latest notice of each key, not yet encoded; created by the first
   * notice, as most connections never get one.
   */
  #notices: Map<unknown, object> | undefined = undefined;
  readonly #maxBytes: number;
  readonly #budget: OutputBudget | undefined;
  /** Counted bytes appended and not yet taken for a write. */
  #appended = 0;
  /** Counted bytes of the write under way. */
  #inFlight = 0;

  /**
   * @param maxBytes The connection's cap.
   * @param budget The server-wide budget, if any.
   */
  constructor(maxBytes: number, budget: OutputBudget | undefined) {
    this.#maxBytes = maxBytes;
    this.#budget = budget;
  }

  /** Bytes queued and not yet written, notices taken for a write included. */
  get pendingBytes(): number {
    return this.#encoder.length + this.#encoder.taken;
  }

  /**
   * Queues one frame.
   *
   * @param message A JSON-encodable object.
   * @returns Whether the counted bytes are now over the cap: `maxBytes`, or
   *   64 KiB while the budget is spent.
   */
  append(message: object): boolean {
    const size = this.#encoder.append(message);
    this.#appended += size;
    const budget = this.#budget;
    if (budget === undefined) {
      return this.#appended + this.#inFlight > this.#maxBytes;
    }
    budget.queued += size;
    const cap = budget.spent
      ? Math.min(this.#maxBytes, SPENT_BUDGET_BYTES)
      : this.#maxBytes;
    return this.#appended + this.#inFlight > cap;
  }

  /**
   * Queues a notice, replacing the one of the same key not yet taken.
   *
   * @param key What it is about.
   * @param message The notice.
   */
  notify(key: unknown, message: object): void {
    (this.#notices ??= new Map()).set(key, message);
  }

  /**
   * Drops the notice of a key not yet taken.
   *
   * @param key What it was about.
   */
  forget(key: unknown): void {
    this.#notices?.delete(key);
  }

  /**
   * The bytes of the next write: every frame queued, then the notices,
   * encoded only now that the socket takes bytes.
   *
   * @returns A view valid until the next `take` or `release`, or `null` when
   *   nothing is queued.
   */
  take(): Uint8Array | null {
    const notices = this.#notices;
    if (notices !== undefined && notices.size > 0) {
      for (const notice of notices.values()) this.#encoder.append(notice);
      notices.clear();
    }
    if (this.#encoder.length === 0) return null;
    this.#inFlight = this.#appended;
    this.#appended = 0;
    return this.#encoder.take();
  }

  /**
   * The write of the last `take` is done: its bytes leave the budget.
   *
   * @returns Whether no counted byte is queued any more.
   */
  written(): boolean {
    if (this.#budget !== undefined) this.#budget.queued -= this.#inFlight;
    this.#inFlight = 0;
    return this.#appended === 0;
  }

  /** Gives the buffer of the last `take` back, once the write settled. */
  release(): void {
    this.#encoder.release();
  }

  /** The connection closed: whatever was queued leaves the budget. */
  drop(): void {
    this.#inFlight += this.#appended;
    this.#appended = 0;
    this.written();
    this.#notices?.clear();
  }
}
