/**
 * The handle of a held lock.
 *
 * @module
 */

import type {
  ContentionEvent,
  HoldAlarmEvent,
  LockMode,
} from "../protocol/lock_protocol.ts";

/** The events a {@linkcode Lock} dispatches, by type. */
export interface LockEventMap {
  /** The hold passed the server's hold-time alarm threshold (advice only). */
  alarm: CustomEvent<HoldAlarmEvent>;
  /** The number of waiters changed (the lock was taken with `onContention`). */
  contention: CustomEvent<ContentionEvent>;
}

/**
 * A lock held through a {@linkcode LockClient}. Release it with
 * {@linkcode Lock.release}, or let `await using` do it.
 *
 * It dispatches `CustomEvent`s: `alarm` (detail: a `HoldAlarmEvent`) when the
 * hold passes the server's hold-time alarm threshold, which is advice only,
 * and `contention` (detail: a `ContentionEvent`) when the lock was taken with
 * `onContention` and the number of waiters changes.
 *
 * @example Holding a lock for a block
 * ```ts ignore
 * await using lock = await client.lock("nightly-report");
 * lock.addEventListener("alarm", (event) => {
 *   console.warn(`held for ${event.detail.heldFor} ms`);
 * });
 * await writeReport({ fence: lock.token });
 * ```
 */
export class Lock extends EventTarget implements AsyncDisposable {
  /** The lock's name. */
  readonly name: string;
  /** The mode it is held in. */
  readonly mode: LockMode;
  /**
   * The fencing token of this grant: larger than that of every earlier grant
   * by the same server. Pass it to the resources the lock protects so they can
   * refuse writes from an older holder.
   */
  readonly token: number;
  readonly #lost: AbortSignal;
  readonly #release: () => Promise<void>;
  #released: Promise<void> | null = null;

  /**
   * Made by {@linkcode LockClient.lock}; not meant to be built directly.
   *
   * @param name The lock's name.
   * @param mode The mode it is held in.
   * @param token The grant's fencing token.
   * @param lost Aborted when the lock is lost.
   * @param release Releases it on the server.
   */
  constructor(
    name: string,
    mode: LockMode,
    token: number,
    lost: AbortSignal,
    release: () => Promise<void>,
  ) {
    super();
    this.name = name;
    this.mode = mode;
    this.token = token;
    this.#lost = lost;
    this.#release = release;
  }

  /**
   * Listens for one of the lock's events, typed by {@linkcode LockEventMap}.
   *
   * @param type `alarm` or `contention`.
   * @param listener Called with the event.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener<K extends keyof LockEventMap>(
    type: K,
    listener: (this: Lock, event: LockEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /**
   * Listens for an event by any name.
   *
   * @param type The event's type.
   * @param listener Called with the event.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    super.addEventListener(type, listener, options);
  }

  /**
   * Aborted, with a {@linkcode LockLostError} whose `reason` says why, if the
   * connection dies while the lock is held: from then on another client may
   * hold it. {@linkcode Lock.release} aborts it only when it finds the lock
   * lost already (the server no longer held it).
   */
  get lost(): AbortSignal {
    return this.#lost;
  }

  /** Whether the lock is still held: neither released nor lost. */
  get held(): boolean {
    return this.#released === null && !this.#lost.aborted;
  }

  /**
   * Releases the lock; calling it again returns the same promise, and after
   * the lock was lost it does nothing. A connection that closes before the
   * server answers has released the lock as surely, and resolves it too.
   *
   * @returns Once the server has released the lock.
   * @throws {LockLostError} When the release finds the lock lost already:
   *   the server answered that this connection no longer held it (reason
   *   `not_held`, or the reason the server gave), or it had announced a
   *   forced release of it (`forced_release`). Another client may have held
   *   the lock meanwhile; `lost` fires with the same error.
   *
   * @example Telling a clean release from a loss noticed at the end
   * ```ts ignore
   * try {
   *   await lock.release();
   * } catch (error) {
   *   if (error instanceof LockLostError) console.error(error.message);
   * }
   * ```
   */
  release(): Promise<void> {
    if (this.#released !== null) return this.#released;
    this.#released = this.#lost.aborted ? Promise.resolve() : this.#release();
    return this.#released;
  }

  /** Same as {@linkcode Lock.release}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
