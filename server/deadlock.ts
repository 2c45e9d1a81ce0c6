/**
 * The deadlock search of the lock table, kept apart from it: the table hands
 * it a lock's holders and queue as plain linked entries and asks, one waiting
 * request at a time, whom that request waits for.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";

/** A request in a lock's queue, as the search sees it. */
export interface QueuedRequest<O> {
  /** Who asked. */
  readonly owner: O;
  /** The mode asked for. */
  readonly mode: LockMode;
  /** The request behind it in the queue. */
  readonly next: QueuedRequest<O> | null;
}

/** A lock, as the search sees it. */
export interface SearchedLock<O> {
  /** Its current holders. */
  readonly holders: Iterable<{ readonly owner: O; readonly mode: LockMode }>;
  /** The first request in its queue. */
  readonly head: QueuedRequest<O> | null;
}

/**
 * The state of one deadlock search, linear in the wait-for graph: each owner
 * is visited once, and each queue entry at most once per mode. The requests
 * ahead of any entry are a prefix of its lock's queue, so each lock's queue is
 * walked once from its head, as far as the furthest entry asked about: a later
 * question about an entry already passed costs nothing. Shared requests
 * conflict only with exclusive ones, so they keep a walk of their own.
 *
 * @example A request waiting for its own holder
 * ```ts
 * import { CycleSearch } from "./deadlock.ts";
 * const lock = { holders: [{ owner: "a", mode: "exclusive" as const }], head: null };
 * console.assert(new CycleSearch("a").blockers(lock, "shared", null));
 * ```
 */
export class CycleSearch<O> {
  /** The owners found to be waited for, each once, in the order found. */
  readonly found: O[] = [];
  readonly #requester: O;
  readonly #seen = new Set<O>();
  /** Per lock, where the walk for exclusive requests stopped; `null`: the end. */
  readonly #exclusiveAt = new Map<SearchedLock<O>, QueuedRequest<O> | null>();
  readonly #exclusivePassed = new Set<QueuedRequest<O>>();
  /** The same for shared requests. */
  readonly #sharedAt = new Map<SearchedLock<O>, QueuedRequest<O> | null>();
  readonly #sharedPassed = new Set<QueuedRequest<O>>();

  /** @param requester The owner whose request is checked. */
  constructor(requester: O) {
    this.#requester = requester;
  }

  /**
   * Adds the owners a request in `mode`, queued before `stop` (at the tail
   * when `null`), waits for.
   *
   * @returns `true` as soon as the requester is one of them.
   */
  blockers(
    lock: SearchedLock<O>,
    mode: LockMode,
    stop: QueuedRequest<O> | null,
  ): boolean {
    const exclusive = mode === "exclusive";
    const walks = exclusive ? this.#exclusiveAt : this.#sharedAt;
    const passed = exclusive ? this.#exclusivePassed : this.#sharedPassed;
    let entry: QueuedRequest<O> | null;
    if (walks.has(lock)) {
      if (stop !== null && passed.has(stop)) return false;
      entry = walks.get(lock) ?? null;
    } else {
      for (const holder of lock.holders) {
        if (
          (exclusive || holder.mode === "exclusive") && this.#add(holder.owner)
        ) {
          return true;
        }
      }
      entry = lock.head;
    }
    for (; entry !== stop && entry !== null; entry = entry.next) {
      passed.add(entry);
      if ((exclusive || entry.mode === "exclusive") && this.#add(entry.owner)) {
        return true;
      }
    }
    walks.set(lock, entry);
    return false;
  }

  /** Records an owner waited for; `true` when it is the requester. */
  #add(owner: O): boolean {
    if (owner === this.#requester) return true;
    if (!this.#seen.has(owner)) {
      this.#seen.add(owner);
      this.found.push(owner);
    }
    return false;
  }
}
