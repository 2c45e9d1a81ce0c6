/**
 * The lock table: pure and synchronous. Requests go in, grants come out; it
 * knows nothing of sockets, timers or clocks. An owner is any object (the
 * server uses its sessions); a ticket is whatever the caller needs to answer
 * a request later (the server keeps the RPC id there). It never calls back:
 * the grants a release causes are pushed into an array the caller passes in,
 * and the caller acts on them once the table is consistent again.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import { deadlocked, type SearchCounter } from "./deadlock.ts";
import { Entry, Lock } from "./lock_queue.ts";

export type { LockMode };

/**
 * Why {@linkcode LockTable.acquire} turned a request away: `busy` (taken, and
 * the caller would not wait), `already_held` / `already_waiting` (the owner
 * already has a request for that lock), `limit_mismatch` (a shared request
 * whose limit differs from that of the shared requests holding or waiting for
 * the lock), `deadlock` (its owner would never get to run again).
 */
export type Refusal =
  | "busy"
  | "already_held"
  | "already_waiting"
  | "limit_mismatch"
  | "deadlock";

/** A request in the table: held, or waiting in its lock's queue. */
export interface LockRequest<O, T> {
  /** Who asked. */
  readonly owner: O;
  /** The lock's name. */
  readonly name: string;
  /** The mode asked for. */
  readonly mode: LockMode;
  /** The caller's data for answering this request. */
  readonly ticket: T;
  /** Whether the lock is held; otherwise the request waits in the queue. */
  readonly held: boolean;
  /** The fencing token of the grant; 0 while waiting. */
  readonly token: number;
}

/** One lock's state, as {@linkcode LockTable.inspect} reports it. */
export interface LockState<O, T> {
  /** The lock's name. */
  name: string;
  /** The mode of the current holders. */
  mode: LockMode;
  /**
   * The most shared holders at once: the limit of its shared requests,
   * `Infinity` when unbounded or when it has none.
   */
  limit: number;
  /** Current holders, in grant order. */
  holders: LockRequest<O, T>[];
  /** Waiting requests, first in line first. */
  waiters: LockRequest<O, T>[];
}

/** Options of {@linkcode LockTable}. */
export interface LockTableOptions {
  /**
   * Issues the fencing token of each grant; must strictly increase. It may
   * throw when no token can be had now (a full disk): a request asked for
   * then is not changed, and a queued request whose turn came stays at the
   * head of its queue until {@linkcode LockTable.resume}.
   *
   * @default {A counter starting at 1}
   */
  nextToken?: (() => number) | undefined;
  /**
   * Counts the requests each deadlock check looks at (its cost, for tests).
   *
   * @default {Not counted}
   */
  searchCounter?: SearchCounter | undefined;
}

/**
 * Named locks with FIFO queues. Shared requests are granted together while no
 * exclusive request is ahead of them, so writers never starve, and while their
 * number stays within the lock's limit (a semaphore of that many slots).
 *
 * @example Two owners taking turns
 * ```ts
 * import { type LockRequest, LockTable } from "./lock_table.ts";
 * const table = new LockTable<object, string>();
 * const granted: LockRequest<object, string>[] = [];
 * const a = {}, b = {};
 * table.acquire(a, "jobs", "exclusive", "a1");
 * table.acquire(b, "jobs", "exclusive", "b1");
 * table.release(a, "jobs", granted);
 * console.assert(granted[0]?.ticket === "b1");
 * ```
 */
export class LockTable<O, T> {
  readonly #locks = new Map<string, Lock<O, T>>();
  readonly #owners = new Map<O, Map<string, Entry<O, T>>>();
  /** Each owner's waiting requests, which the deadlock search follows. */
  readonly #waiting = new Map<O, Set<Entry<O, T>>>();
  readonly #nextToken: () => number;
  readonly #counter: SearchCounter | undefined;
  /** Locks whose head could not be granted for want of a token. */
  readonly #stalled = new Set<Lock<O, T>>();

  /** @param options The token source and the search's counter. */
  constructor(options: LockTableOptions = {}) {
    let token = 0;
    this.#nextToken = options.nextToken ?? (() => ++token);
    this.#counter = options.searchCounter;
  }

  /** How many locks are held or waited for. */
  get size(): number {
    return this.#locks.size;
  }

  /**
   * Asks for a lock.
   *
   * @param owner Who asks.
   * @param name The lock's name.
   * @param mode `exclusive` or `shared`.
   * @param ticket Returned with the grant.
   * @param wait `false` to refuse with `busy` instead of queueing.
   * @param limit The most shared holders at once, for a shared request;
   *   exclusive requests hold alone whatever the limit, and ignore it.
   * @returns The request, held (granted now) or waiting; or why it was
   *   refused.
   */
  acquire(
    owner: O,
    name: string,
    mode: LockMode,
    ticket: T,
    wait = true,
    limit = Infinity,
  ): LockRequest<O, T> | Refusal {
    let own = this.#owners.get(owner);
    const existing = own?.get(name);
    if (existing !== undefined) {
      return existing.held ? "already_held" : "already_waiting";
    }
    let lock = this.#locks.get(name);
    const shared = mode === "shared";
    if (
      shared && lock !== undefined && lock.shared > 0 && lock.limit !== limit
    ) {
      return "limit_mismatch";
    }
    const grantable = lock === undefined ||
      (lock.head === null &&
        (lock.holders.size === 0 ||
          (shared && lock.mode === "shared" && lock.holders.size < limit)));
    if (!grantable && !wait) return "busy";
    // The token comes first: if issuing it fails, nothing has changed.
    const token = grantable ? this.#nextToken() : 0;
    if (lock === undefined) {
      lock = new Lock(name);
      this.#locks.set(name, lock);
    }
    // Only an owner that holds or waits for something can be waited for, so
    // only such an owner can be deadlocked: most requests skip the search.
    const search = !grantable && own !== undefined && own.size > 0;
    if (own === undefined) {
      own = new Map();
      this.#owners.set(owner, own);
    }
    const entry = new Entry(owner, name, mode, ticket, lock);
    own.set(name, entry);
    lock.add(entry, limit, grantable ? token : null);
    if (grantable) return entry;
    this.#wait(entry);
    // The search sees the request queued, as it would wait.
    if (
      search && deadlocked(entry, this.#owners, this.#waiting, this.#counter)
    ) {
      own.delete(name);
      this.#remove(entry, []);
      return "deadlock";
    }
    return entry;
  }

  /**
   * Releases an owner's hold on a lock, or withdraws its waiting request.
   * Waiters that can now hold are granted and pushed into `granted`, already
   * held, in grant order.
   *
   * @param owner Who releases.
   * @param name The lock's name.
   * @param granted Where the grants it causes go.
   * @returns The removed request, or `null` when the owner had none.
   */
  release(
    owner: O,
    name: string,
    granted: LockRequest<O, T>[],
  ): LockRequest<O, T> | null {
    const own = this.#owners.get(owner);
    const entry = own?.get(name);
    if (own === undefined || entry === undefined) return null;
    own.delete(name);
    if (own.size === 0) this.#owners.delete(owner);
    this.#remove(entry, granted);
    return entry;
  }

  /**
   * Withdraws one waiting request, as when its wait times out; does nothing
   * once it is held or gone.
   *
   * @param request A request `acquire` returned.
   * @param granted Where the grants it causes go (a withdrawn exclusive
   *   request can free the shared ones behind it).
   * @returns `true` when the request was waiting and is now withdrawn.
   */
  withdraw(
    request: LockRequest<O, T>,
    granted: LockRequest<O, T>[],
  ): boolean {
    const own = this.#owners.get(request.owner);
    if (request.held || own?.get(request.name) !== request) return false;
    return this.release(request.owner, request.name, granted) !== null;
  }

  /**
   * Releases every hold and withdraws every waiting request of an owner, as
   * when its connection dies. Costs O(requests of that owner).
   *
   * @param owner Who is gone.
   * @param granted Where the grants it causes go.
   * @returns The removed requests.
   */
  releaseAll(
    owner: O,
    granted: LockRequest<O, T>[],
  ): LockRequest<O, T>[] {
    const own = this.#owners.get(owner);
    if (own === undefined) return [];
    this.#owners.delete(owner);
    const removed = [...own.values()];
    for (const entry of removed) this.#remove(entry, granted);
    return removed;
  }

  /**
   * Grants the requests whose turn came while no token could be had, once
   * tokens can be had again; a lock whose token still fails waits on.
   *
   * @param granted Where the grants go, in grant order.
   */
  resume(granted: LockRequest<O, T>[]): void {
    const stalled = [...this.#stalled];
    this.#stalled.clear();
    for (const lock of stalled) {
      if (this.#locks.get(lock.name) === lock) this.#promote(lock, granted);
    }
  }

  /**
   * How many requests an owner has, held or waiting. Costs O(1).
   *
   * @param owner Whose requests.
   * @returns The count.
   */
  countOf(owner: O): number {
    return this.#owners.get(owner)?.size ?? 0;
  }

  /**
   * The requests an owner has, held or waiting.
   *
   * @param owner Whose requests.
   * @returns Its requests, in the order it made them.
   */
  requestsOf(owner: O): LockRequest<O, T>[] {
    return [...(this.#owners.get(owner)?.values() ?? [])];
  }

  /**
   * One lock's holders and queue.
   *
   * @param name The lock's name.
   * @returns Its state, or `null` when nobody holds or waits for it.
   */
  inspect(name: string): LockState<O, T> | null {
    const lock = this.#locks.get(name);
    if (lock === undefined) return null;
    const waiters: LockRequest<O, T>[] = [];
    for (let entry = lock.head; entry !== null; entry = entry.next) {
      waiters.push(entry);
    }
    return {
      name,
      mode: lock.mode,
      limit: lock.limit,
      holders: [...lock.holders],
      waiters,
    };
  }

  /**
   * How many hold and wait for a lock. Costs O(1).
   *
   * @param name The lock's name.
   * @returns The counts, or `null` when nobody holds or waits for it.
   */
  count(name: string): { holders: number; waiters: number } | null {
    const lock = this.#locks.get(name);
    if (lock === undefined) return null;
    return { holders: lock.holders.size, waiters: lock.waiting };
  }

  /**
   * The names of all locks held or waited for.
   *
   * @returns The names, in no particular order.
   */
  names(): IterableIterator<string> {
    return this.#locks.keys();
  }

  #remove(entry: Entry<O, T>, granted: LockRequest<O, T>[]): void {
    if (!entry.held) this.#unwait(entry);
    const lock = entry.lock;
    lock.remove(entry);
    this.#promote(lock, granted);
    if (lock.idle) this.#locks.delete(lock.name);
  }

  /**
   * Grants the head of the queue, and the shared run behind a shared head up
   * to the limit; stops at a head no token can be had for.
   */
  #promote(lock: Lock<O, T>, granted: LockRequest<O, T>[]): void {
    while (lock.grantable() !== null) {
      let token: number;
      try {
        token = this.#nextToken();
      } catch {
        this.#stalled.add(lock);
        return;
      }
      const entry = lock.grantHead(token);
      this.#unwait(entry);
      granted.push(entry);
    }
  }

  #wait(entry: Entry<O, T>): void {
    let waiting = this.#waiting.get(entry.owner);
    if (waiting === undefined) {
      waiting = new Set();
      this.#waiting.set(entry.owner, waiting);
    }
    waiting.add(entry);
  }

  #unwait(entry: Entry<O, T>): void {
    const waiting = this.#waiting.get(entry.owner);
    if (waiting?.delete(entry) && waiting.size === 0) {
      this.#waiting.delete(entry.owner);
    }
  }
}
