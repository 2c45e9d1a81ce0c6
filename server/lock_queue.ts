/**
 * One lock of the lock table and its requests, as PostgreSQL keeps
 * a LOCK and its PROCLOCKs: the holders, the queue as a doubly linked list
 * (so a request leaves it in O(1) from anywhere), and the counts the grant
 * rule reads. The table owns the indexes by name and owner and the policy:
 * when to grant, and with which token.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import type { LockRequest } from "./lock_table.ts";

/** A request in a lock's holders or queue. */
export class Entry<O, T> implements LockRequest<O, T> {
  /** Whether it holds the lock; otherwise it waits in the queue. */
  held = false;
  /** The fencing token of its grant; 0 while waiting. */
  token = 0;
  /** The request ahead of it in the queue. */
  prev: Entry<O, T> | null = null;
  /** The request behind it in the queue. */
  next: Entry<O, T> | null = null;

  /**
   * @param owner Who asked.
   * @param name The lock's name.
   * @param mode The mode asked for.
   * @param ticket The caller's data for answering it.
   * @param lock Its lock.
   */
  constructor(
    readonly owner: O,
    readonly name: string,
    readonly mode: LockMode,
    readonly ticket: T,
    readonly lock: Lock<O, T>,
  ) {}
}

/** A lock: its holders, its queue, and its shared requests' limit. */
export class Lock<O, T> {
  /** The requests holding it. */
  readonly holders = new Set<Entry<O, T>>();
  /** The current holders' mode. */
  mode: LockMode = "exclusive";
  /** The first request in the queue. */
  head: Entry<O, T> | null = null;
  /** The last request in the queue. */
  tail: Entry<O, T> | null = null;
  /** How many requests wait in the queue. */
  waiting = 0;
  /** How many shared requests hold or wait. */
  shared = 0;
  /** Their limit, which they all asked for; `Infinity` while there are none. */
  limit = Infinity;

  /** @param name The lock's name. */
  constructor(readonly name: string) {}

  /** Whether nobody holds or waits for it. */
  get idle(): boolean {
    return this.holders.size === 0 && this.head === null;
  }

  /**
   * The head of the queue when it may hold now: nobody holds the lock, or a
   * shared head joins shared holders below the limit.
   */
  grantable(): Entry<O, T> | null {
    const head = this.head;
    return head !== null &&
        (this.holders.size === 0 ||
          (head.mode === "shared" && this.mode === "shared" &&
            this.holders.size < this.limit))
      ? head
      : null;
  }

  /**
   * Adds a request, as a holder or at the tail of the queue.
   *
   * @param entry The request, of this lock.
   * @param limit The limit it asked for, when shared.
   * @param token Its grant's token, to hold; `null` to queue it.
   */
  add(entry: Entry<O, T>, limit: number, token: number | null): void {
    if (entry.mode === "shared") {
      this.shared++;
      this.limit = limit;
    }
    if (token !== null) {
      this.#hold(entry, token);
    } else if (this.tail === null) {
      this.head = this.tail = entry;
      this.waiting++;
    } else {
      entry.prev = this.tail;
      this.tail.next = entry;
      this.tail = entry;
      this.waiting++;
    }
  }

  /**
   * Takes a request out, held or queued.
   *
   * @param entry The request, of this lock.
   */
  remove(entry: Entry<O, T>): void {
    if (entry.held) {
      this.holders.delete(entry);
    } else {
      this.#unlink(entry);
    }
    if (entry.mode === "shared" && --this.shared === 0) this.limit = Infinity;
  }

  /**
   * Grants the head of the queue.
   *
   * @param token Its grant's token.
   * @returns The request granted.
   */
  grantHead(token: number): Entry<O, T> {
    const head = this.head!;
    this.#unlink(head);
    this.#hold(head, token);
    return head;
  }

  #hold(entry: Entry<O, T>, token: number): void {
    entry.held = true;
    entry.token = token;
    this.mode = entry.mode;
    this.holders.add(entry);
  }

  #unlink(entry: Entry<O, T>): void {
    if (entry.prev === null) this.head = entry.next;
    else entry.prev.next = entry.next;
    if (entry.next === null) this.tail = entry.prev;
    else entry.next.prev = entry.prev;
    entry.prev = entry.next = null;
    this.waiting--;
  }
}
