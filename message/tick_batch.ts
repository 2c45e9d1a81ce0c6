/**
 * Work gathered during one tick and done once, when the tick's synchronous
 * work is over: every connection that queued frames in a tick writes them in
 * one write, after all the handlers of that tick have run (nats flushes its
 * writes the same way).
 *
 * @module
 */

/** Items gathered in one tick, each handed to `run` at the tick's end. */
export class TickBatch<T> {
  readonly #items: T[] = [];
  readonly #run: (item: T) => void;
  #queued = false;

  /** @param run What to do with each item, in the order they came. */
  constructor(run: (item: T) => void) {
    this.#run = run;
  }

  /**
   * Adds an item to this tick's batch.
   *
   * @param item The item; added twice, it is run twice.
   */
  add(item: T): void {
    this.#items.push(item);
    if (!this.#queued) {
      this.#queued = true;
      queueMicrotask(this.#flush);
    }
  }

  readonly #flush = (): void => {
    this.#queued = false;
    const items = this.#items;
    for (let i = 0; i < items.length; i++) this.#run(items[i]!);
    items.length = 0;
  };
}
