/**
 * Waiting for what the client library reports: events on a target, the loss
 * of a lock, values pushed by callbacks. Every wait is bounded.
 *
 * @module
 */

import type { Lock } from "../mod.ts";
import { deadline } from "./helpers.ts";

/** How long any one awaited event may take before the test fails. */
export const WAIT_MS = 10_000;

/**
 * The detail of the next event of this type on a target.
 *
 * @param target What dispatches the event.
 * @param type The event's type.
 * @returns The event's `detail`.
 */
export function nextEvent<T>(target: EventTarget, type: string): Promise<T> {
  return new Promise((resolve) =>
    target.addEventListener(
      type,
      (event) => resolve((event as CustomEvent<T>).detail),
      { once: true },
    )
  );
}

/**
 * Resolves once the lock is lost.
 *
 * @param lock The lock.
 * @returns The reason of its `lost` signal.
 */
export function lost(lock: Lock): Promise<unknown> {
  if (lock.lost.aborted) return Promise.resolve(lock.lost.reason);
  return new Promise((resolve) =>
    lock.lost.addEventListener("abort", () => resolve(lock.lost.reason), {
      once: true,
    })
  );
}

/** Values pushed by callbacks, taken one at a time by the test. */
export class Inbox<T> {
  readonly #items: T[] = [];
  readonly #takers: Array<(item: T) => void> = [];

  /** Delivers a value; usable as a callback. */
  readonly push = (item: T): void => {
    const taker = this.#takers.shift();
    if (taker) taker(item);
    else this.#items.push(item);
  };

  /** Values delivered and not taken yet. */
  get pending(): readonly T[] {
    return this.#items;
  }

  /**
   * The next value, within {@linkcode WAIT_MS}.
   *
   * @param what What is awaited, for the message.
   * @returns The value.
   */
  next(what: string): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return deadline(
      new Promise<T>((resolve) => this.#takers.push(resolve)),
      WAIT_MS,
      what,
    );
  }
}
