/**
 * Turns per lock name: one connection holds a name at most once, so requests
 * for the same name from several places in a program wait here, first come
 * first served, until the one before them has ended.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import { MAX_WAIT_MS } from "../protocol/lock_protocol.ts";
import { LockTimeoutError } from "./errors.ts";

/** Ends a turn: lets the next request for the name go. Idempotent. */
export type EndTurn = () => void;

/**
 * A FIFO of requests per name. A turn is taken in call order, and ended once
 * the request has left nothing on the server that a later request for the
 * name could collide with (its release or withdrawal is sent, or it failed).
 *
 * @example Two places asking for one name
 * ```ts
 * import { Turns } from "./turns.ts";
 * const turns = new Turns();
 * const end = await turns.take("x");
 * const second = turns.take("x");
 * end();
 * (await second)();
 * ```
 */
export class Turns {
  /** The last turn of each name: resolves when it has ended. */
  readonly #last = new Map<string, Promise<void>>();

  /**
   * Takes the next turn for `name` and waits until the turns before it have
   * ended. The place in line is taken synchronously, at the call.
   *
   * @param name The lock's name.
   * @param wait The most milliseconds to wait; absent: as long as it takes.
   * @param signal Stops waiting.
   * @returns The function that ends this turn.
   * @throws {LockTimeoutError} When `wait` passes first.
   * @throws The signal's reason when it aborts first.
   */
  async take(
    name: string,
    wait?: number,
    signal?: AbortSignal,
  ): Promise<EndTurn> {
    const previous = this.#last.get(name);
    const turn = Promise.withResolvers<void>();
    this.#last.set(name, turn.promise);
    turn.promise.then(() => {
      if (this.#last.get(name) === turn.promise) this.#last.delete(name);
    });
    const end = () => turn.resolve();
    if (previous === undefined) return end;
    let reached: boolean;
    try {
      reached = await reach(previous, wait, signal);
    } catch (error) {
      // Given up before its turn: the turns behind it still wait for the
      // ones before it.
      turn.resolve(previous);
      throw error;
    }
    if (!reached) {
      turn.resolve(previous);
      throw new LockTimeoutError(
        `Cannot acquire lock "${name}": timed out after ${wait} ms, held or waited for elsewhere in this program`,
      );
    }
    return end;
  }
}

/** Whether `previous` resolved before `wait` passed; rejects on abort. */
async function reach(
  previous: Promise<void>,
  wait: number | undefined,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  if (wait === undefined && signal === undefined) {
    await previous;
    return true;
  }
  const done = new AbortController();
  const stop = signal ? AbortSignal.any([done.signal, signal]) : done.signal;
  try {
    const outcome = await Promise.race([
      previous.then(() => "reached" as const),
      delay(wait ?? MAX_WAIT_MS, stop).then((aborted) =>
        aborted ? "aborted" as const : "expired" as const
      ),
    ]);
    if (outcome === "aborted") throw signal!.reason;
    return outcome === "reached";
  } finally {
    done.abort();
  }
}
