/**
 * The deadlock check of the lock table, kept apart from it: the table hands
 * it a request just queued, with the locks and owners it reaches as plain
 * linked entries, and asks whether that request's owner could ever run again.
 *
 * An owner that waits for nothing can finish and free what it holds; what
 * then fits is granted, first in line first, and owners whose requests are
 * all granted finish in turn (a reduction of the wait-for graph). A request
 * is deadlocked when its owner is never freed that way. With exclusive and
 * unbounded shared locks this is a cycle of owners waiting for each other;
 * with a limit above one a cycle alone is not, since a holder outside it may
 * free a slot.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";

/** A request, held or queued, as the check sees it. */
export interface SearchedRequest<O> {
  /** Who asked. */
  readonly owner: O;
  /** The mode asked for. */
  readonly mode: LockMode;
  /** Whether it holds its lock; otherwise it waits in the lock's queue. */
  readonly held: boolean;
  /** Its lock. */
  readonly lock: SearchedLock<O>;
  /** The request behind it in the queue. */
  readonly next: SearchedRequest<O> | null;
}

/** A lock, as the check sees it. */
export interface SearchedLock<O> {
  /** Its current holders. */
  readonly holders: ReadonlySet<SearchedRequest<O>>;
  /** The first request in its queue. */
  readonly head: SearchedRequest<O> | null;
  /** The current holders' mode. */
  readonly mode: LockMode;
  /** The most shared holders at once; `Infinity` when unbounded. */
  readonly limit: number;
}

/**
 * Counts the work of deadlock checks: each request the search or the
 * reduction looks at adds one, so a test can bound a check's cost by the
 * size of the graph instead of by the clock.
 */
export interface SearchCounter {
  /** Requests looked at so far, over every check counted. */
  visited: number;
}

/**
 * Whether a request just queued is deadlocked. It costs time linear in the
 * part of the wait-for graph it reaches: each owner reached is visited once,
 * each lock's queue is walked once per mode as far as the furthest request
 * asked about, and the reduction then moves through each queue once.
 *
 * Like the table it assumes no request was deadlocked before this one, so it
 * answers `false` at once when nothing reached waits for the requester.
 *
 * @param request The request, at the tail of its lock's queue.
 * @param owners Every owner's requests, held or waiting.
 * @param waiting Every owner's waiting requests (the search follows only
 *   these, so an owner that holds much and waits for little costs little).
 * @param counter Where to count the requests looked at.
 * @returns `true` when its owner would never be freed.
 *
 * @example A request waiting for its own holder
 * ```ts
 * import { deadlocked, type SearchedRequest } from "./deadlock.ts";
 * type Request = SearchedRequest<string>;
 * const lock = {
 *   holders: new Set<Request>(),
 *   head: null as Request | null,
 *   mode: "exclusive" as const,
 *   limit: Infinity,
 * };
 * const held = { owner: "a", mode: "exclusive", held: true, lock, next: null } as const;
 * const waiting = { ...held, held: false };
 * lock.holders.add(held);
 * lock.head = waiting;
 * const owners = new Map([["a", new Map([["x", waiting]])]]);
 * const waits = new Map([["a", new Set([waiting])]]);
 * console.assert(deadlocked(waiting, owners, waits));
 * ```
 */
export function deadlocked<O>(
  request: SearchedRequest<O>,
  owners: ReadonlyMap<O, ReadonlyMap<string, SearchedRequest<O>>>,
  waiting: ReadonlyMap<O, ReadonlySet<SearchedRequest<O>>>,
  counter: SearchCounter = { visited: 0 },
): boolean {
  const search = new Search(request.owner, owners, waiting, counter);
  return search.reaches(request) && !search.frees();
}

/** A lock's state during one check: its walks and its reduced queue. */
class LockView<O> {
  /**
   * Where the walk that takes every request ahead into account stopped:
   * `null` at the end, `undefined` before it starts.
   */
  fullAt: SearchedRequest<O> | null | undefined = undefined;
  /** The same for the walk of shared requests in an unbounded lock. */
  sharedAt: SearchedRequest<O> | null | undefined = undefined;
  /** Holders left in the reduction. */
  held: number;
  /** Their mode. */
  mode: LockMode;
  /** The first request not granted yet in the reduction. */
  next: SearchedRequest<O> | null;

  constructor(readonly lock: SearchedLock<O>) {
    this.next = lock.head;
    this.held = lock.holders.size;
    this.mode = lock.mode;
  }
}

class Search<O> {
  readonly #requester: O;
  readonly #owners: ReadonlyMap<O, ReadonlyMap<string, SearchedRequest<O>>>;
  readonly #waits: ReadonlyMap<O, ReadonlySet<SearchedRequest<O>>>;
  /** The owners reached, each once, in the order found. */
  readonly #found: O[] = [];
  readonly #seen = new Set<O>();
  /** Per owner reached, how many of its requests wait in the reduction. */
  readonly #waiting = new Map<O, number>();
  readonly #views = new Map<SearchedLock<O>, LockView<O>>();
  /** The queued requests walked past, per walk. */
  readonly #fullPassed = new Set<SearchedRequest<O>>();
  readonly #sharedPassed = new Set<SearchedRequest<O>>();
  readonly #counter: SearchCounter;
  #requesterReached = false;

  constructor(
    requester: O,
    owners: ReadonlyMap<O, ReadonlyMap<string, SearchedRequest<O>>>,
    waits: ReadonlyMap<O, ReadonlySet<SearchedRequest<O>>>,
    counter: SearchCounter,
  ) {
    this.#requester = requester;
    this.#owners = owners;
    this.#waits = waits;
    this.#counter = counter;
    this.#found.push(requester);
    this.#seen.add(requester);
  }

  /**
   * Finds every owner the new request waits for, transitively; `true` when
   * one of them waits for the requester. Only a cycle through the new request
   * can make it deadlocked (none was before, and nothing queues behind it),
   * so the requester's other requests are followed only once one is found:
   * the reduction then needs every owner they reach too.
   *
   * @param request The new request.
   */
  reaches(request: SearchedRequest<O>): boolean {
    this.#walk(request);
    this.#follow(1);
    if (!this.#requesterReached) return false;
    this.#follow(0);
    return true;
  }

  /** Walks the waiting requests of the owners found from `start` on. */
  #follow(start: number): void {
    // The list grows while it is read: each owner found is visited in turn.
    for (let i = start; i < this.#found.length; i++) {
      for (const waiting of this.#waits.get(this.#found[i]!) ?? []) {
        this.#counter.visited++;
        this.#walk(waiting);
      }
    }
  }

  /** Runs the reduction; `true` once the requester is freed. */
  frees(): boolean {
    const free: O[] = [];
    for (const owner of this.#found) {
      let waiting = 0;
      for (const request of this.#owners.get(owner)?.values() ?? []) {
        this.#counter.visited++;
        if (!request.held) waiting++;
      }
      this.#waiting.set(owner, waiting);
      if (waiting === 0) free.push(owner);
    }
    for (let i = 0; i < free.length; i++) {
      for (const request of this.#owners.get(free[i]!)?.values() ?? []) {
        this.#counter.visited++;
        const view = this.#views.get(request.lock);
        if (view === undefined) continue;
        view.held--;
        if (this.#grant(view, free)) return true;
      }
    }
    return false;
  }

  /**
   * Grants what fits at the head of a reduced queue, freeing the owners whose
   * last wait it was; `true` when the requester is among them.
   */
  #grant(view: LockView<O>, free: O[]): boolean {
    for (
      let next = view.next;
      next !== null && this.#reached(next) &&
      (view.held === 0 ||
        (next.mode === "shared" && view.mode === "shared" &&
          view.held < view.lock.limit));
      next = view.next
    ) {
      this.#counter.visited++;
      view.held++;
      view.mode = next.mode;
      view.next = next.next;
      const waiting = this.#waiting.get(next.owner);
      if (waiting === undefined) continue;
      this.#waiting.set(next.owner, waiting - 1);
      if (waiting > 1) continue;
      if (next.owner === this.#requester) return true;
      free.push(next.owner);
    }
    return false;
  }

  /**
   * Adds the owners a queued request waits for: the holders and the requests
   * ahead of it that must let go or be granted first. In an unbounded lock
   * shared requests never wait for each other; with a limit, they do. The
   * requests ahead of any entry are a prefix of its lock's queue, so each
   * queue is walked once per mode, as far as the furthest entry asked about.
   */
  #walk(request: SearchedRequest<O>): void {
    const lock = request.lock;
    const all = request.mode === "exclusive" || lock.limit !== Infinity;
    const passed = all ? this.#fullPassed : this.#sharedPassed;
    if (passed.has(request)) return;
    let view = this.#views.get(lock);
    if (view === undefined) {
      view = new LockView(lock);
      this.#views.set(lock, view);
    }
    let entry = all ? view.fullAt : view.sharedAt;
    if (entry === undefined) {
      // This mode's first walk of the lock: the holders it waits for.
      for (const holder of lock.holders) {
        this.#counter.visited++;
        if (all || holder.mode === "exclusive") this.#add(holder.owner);
      }
      entry = lock.head;
    }
    for (; entry !== request && entry !== null; entry = entry.next) {
      this.#counter.visited++;
      passed.add(entry);
      if (all || entry.mode === "exclusive") this.#add(entry.owner);
    }
    if (all) view.fullAt = entry;
    else view.sharedAt = entry;
  }

  /**
   * Whether the reduction may grant a queued request: a request of an owner
   * reached, or one ahead of such a request. Past them the queue matters to
   * nobody reached, and the reduction stops there.
   */
  #reached(request: SearchedRequest<O>): boolean {
    return this.#seen.has(request.owner) ||
      this.#fullPassed.has(request) || this.#sharedPassed.has(request);
  }

  /** Records an owner waited for. */
  #add(owner: O): void {
    if (owner === this.#requester) this.#requesterReached = true;
    if (this.#seen.has(owner)) return;
    this.#seen.add(owner);
    this.#found.push(owner);
  }
}
