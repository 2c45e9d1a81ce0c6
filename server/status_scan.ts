/**
 * One `status` report in progress: a walk of the lock space that lists the
 * locks it passes into pages of bounded bytes and work, and counts them; and
 * how a holder or waiter is described, for `status` and `forceRelease`.
 *
 * @module
 */

import type {
  StatusEntry,
  StatusLock,
  StatusTotals,
} from "../protocol/lock_protocol.ts";
import { jsonBytes } from "./json_bytes.ts";
import type { Timing } from "./journal.ts";
import type { LockRequest, LockView, RequestOwner } from "./lock_space.ts";

/** Room for the envelope, `server`, `connections`, `next` and `totals`. */
const PAGE_OVERHEAD = 512;
/** Room for a lock's keys, mode and limit, `more`, and its commas. */
const LOCK_OVERHEAD = 100;
/** Room for an entry's keys, numbers, mode and date, and its comma. */
const ENTRY_OVERHEAD = 180;

/** The lock space a report walks: a server's, or a whole cluster's. */
export type StatusSpace = LockView<Timing>;
type State = NonNullable<ReturnType<StatusSpace["inspect"]>>;
const NO_NAMES: Iterator<string> = [][Symbol.iterator]();

/**
 * One report in progress: a walk of the lock table in its own order (a `Map`
 * walk sees every lock that stays once, and again each lock taken anew
 * meanwhile, which it leaves out), where it stands inside the lock it is
 * listing, and what it has counted.
 */
export class StatusScan {
  /**
   * The `next` of its last page: good for one page, so requests pipelined
   * with the same cursor are refused, not answered page after page.
   */
  get cursor(): string {
    return `${this.#id}.${this.#pages}`;
  }
  /** What it counted so far; the whole count once it is done. */
  readonly totals: StatusTotals = { locks: 0, holders: 0, waiters: 0 };
  readonly #space: StatusSpace;
  #names: Iterator<string>;
  readonly #match: ((name: string) => boolean) | undefined;
  #unlisted: number;
  /** The lock being listed, and how many of its holders and waiters are. */
  #current: { name: string; holders: number; waiters: number } | undefined;
  #done = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #id: string;
  #pages = 0;
  /** When the walk started (ms since the epoch). */
  readonly #started = Date.now();

  /**
   * Starts a walk.
   *
   * @param space Where the locks are.
   * @param id What its pages' `next` starts with, unique in the process.
   * @param match Which names to list and count; all without it.
   * @param limit How many locks to list.
   */
  constructor(
    space: StatusSpace,
    id: string,
    match: ((name: string) => boolean) | undefined,
    limit: number,
  ) {
    this.#space = space;
    this.#id = id;
    this.#names = space.names()[Symbol.iterator]();
    this.#match = match;
    this.#unlisted = limit;
  }

  /** Whether the walk has passed the last lock. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Lists the next locks.
   *
   * @param maxBytes Roughly the most JSON; at least one entry is listed.
   * @param maxUnits The most names to visit (a long name counts more).
   * @returns The locks of the page; the last may have `more`.
   */
  page(maxBytes: number, maxUnits: number): StatusLock[] {
    clearTimeout(this.#timer);
    this.#pages++;
    const locks: StatusLock[] = [];
    const budget = { bytes: maxBytes - PAGE_OVERHEAD, first: true };
    const cost = this.#match === undefined ? 0 : 1 / 4096;
    for (let units = 0; units < maxUnits;) {
      let state: State | null;
      if (this.#current === undefined) {
        const step = this.#names.next();
        if (step.done) {
          this.#done = true;
          return locks;
        }
        const name = step.value;
        units += 1 + name.length * cost;
        if (this.#match !== undefined && !this.#match(name)) continue;
        state = this.#space.inspect(name);
        if (state === null) continue;
        units += (state.holders.length + state.waiters.length) / 64;
        if (this.#bornDuring(state)) continue;
        this.totals.locks++;
        this.totals.holders += state.holders.length;
        this.totals.waiters += state.waiters.length;
        if (this.#unlisted === 0) continue;
        this.#unlisted--;
        this.#current = { name, holders: 0, waiters: 0 };
      } else {
        state = this.#space.inspect(this.#current.name);
        units += 1 +
          (state === null
            ? 0
            : (state.holders.length + state.waiters.length) / 64);
      }
      if (
        state !== null && !this.#bornDuring(state) &&
        !this.#list(state, locks, budget)
      ) {
        return locks;
      }
      this.#current = undefined;
    }
    return locks;
  }

  /**
   * Drops the walk if no page is asked for within `ms`.
   *
   * @param ms How long to wait.
   * @param dropped Called when it is dropped.
   */
  idle(ms: number, dropped: () => void): void {
    this.#timer = setTimeout(() => {
      this.stop();
      dropped();
    }, ms);
  }

  /** Ends the walk: its connection closed, or a new report replaced it. */
  stop(): void {
    clearTimeout(this.#timer);
    // Lets go of the table's walk at once, whoever still holds this object.
    this.#names = NO_NAMES;
    this.#done = true;
  }

  /**
   * Whether every request of a lock came after the walk started: then the
   * lock was taken (or taken again) meanwhile, and the walk may already have
   * listed its earlier life. Leaving such locks out lists each lock once.
   */
  #bornDuring(state: State): boolean {
    for (const list of [state.holders, state.waiters]) {
      for (const request of list) {
        if (request.ticket.asked <= this.#started) return false;
      }
    }
    return true;
  }

  /**
   * Lists the rest of the current lock, as far as the page has room.
   *
   * @returns `false` when the page is full.
   */
  #list(
    state: State,
    locks: StatusLock[],
    budget: { bytes: number; first: boolean },
  ): boolean {
    const at = this.#current!;
    const lockBytes = LOCK_OVERHEAD + jsonBytes(state.name);
    if (lockBytes > budget.bytes && !budget.first) return false;
    budget.bytes -= lockBytes;
    const lock: StatusLock = {
      name: state.name,
      mode: state.mode,
      holders: [],
      waiters: [],
    };
    if (state.limit !== Infinity) lock.limit = state.limit;
    locks.push(lock);
    const now = Date.now();
    for (
      const [from, into, key] of [
        [state.holders, lock.holders, "holders"],
        [state.waiters, lock.waiters, "waiters"],
      ] as const
    ) {
      for (; at[key] < from.length; at[key]++) {
        const request = from[at[key]]!;
        const bytes = ENTRY_OVERHEAD + jsonBytes(request.owner.peer) +
          (request.owner.label === undefined
            ? 0
            : jsonBytes(request.owner.label));
        if (bytes > budget.bytes && !budget.first) {
          // A lock none of whose entries fit waits for the next page whole.
          if (lock.holders.length + lock.waiters.length === 0) locks.pop();
          else lock.more = true;
          return false;
        }
        budget.bytes -= bytes;
        budget.first = false;
        into.push(describe(request, now));
      }
    }
    budget.first = false;
    return true;
  }
}

/**
 * A holder or waiter, as `status` and `forceRelease` report it.
 *
 * @param request The request.
 * @param now The time of the report (ms since the epoch).
 * @returns Its entry.
 */
export function describe(
  request: LockRequest<RequestOwner, Timing>,
  now: number = Date.now(),
): StatusEntry {
  const ticket = request.ticket;
  const since = request.held ? ticket.granted : ticket.asked;
  const described: StatusEntry = {
    connectionId: request.owner.id,
    peer: request.owner.peer,
    mode: request.mode,
    since: new Date(since).toISOString(),
    elapsed: Math.max(0, now - since) / 1000,
  };
  const label = request.owner.label;
  if (label !== undefined) described.label = label;
  if (request.held && request.token > 0) described.token = request.token;
  const node = request.owner.node;
  if (node !== undefined) described.node = node;
  return described;
}
