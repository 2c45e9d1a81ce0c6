/**
 * The lock server's budget of requests: every request it holds or queues, in
 * all and per peer IP, against a total sized from the heap. A limit per
 * connection is a multiplication (100,000 connections × 10,000 locks let one
 * IP ask for 10⁹ locks, and the server died of heap exhaustion at about
 * 6 M); this is the product's total. Like PostgreSQL's fixed lock table,
 * which answers "out of shared memory" to the asker only, a request past the
 * budget is refused and everyone else carries on.
 *
 * The same accounting knows the oldest hold (holds are kept in grant order)
 * and how many requests wait, which the metrics and the fencing-token guard
 * read.
 *
 * @module
 */

import { getHeapStatistics } from "node:v8";
import type { LockRequest } from "./lock_table.ts";
import type { Session } from "./session.ts";

/**
 * The heap one held or queued request costs, in bytes, with its margin: a
 * held lock measured 580 bytes of heap (100,000 locks on one connection,
 * after a full GC; see docs/operations.md), and a queued one keeps a ticket,
 * timers and queue links too.
 */
export const REQUEST_COST_BYTES = 1024;

/** The share of the V8 heap limit the requests may fill. */
export const REQUEST_HEAP_SHARE = 0.5;

/** The most requests a server holds and queues, in all and per peer IP. */
export interface RequestBudgetLimits {
  /** In all. */
  readonly maxRequests: number;
  /** From the connections of one IP address. */
  readonly maxRequestsPerIp: number;
}

/**
 * The budget derived from this process's heap: half of the V8 heap limit at
 * {@linkcode REQUEST_COST_BYTES} a request, and half of that per IP, so that
 * one address cannot take all of it.
 *
 * @returns The derived limits.
 */
export function defaultRequestBudget(): RequestBudgetLimits {
  const heap = getHeapStatistics().heap_size_limit;
  const maxRequests = Math.floor(
    heap * REQUEST_HEAP_SHARE / REQUEST_COST_BYTES,
  );
  return { maxRequests, maxRequestsPerIp: Math.floor(maxRequests / 2) };
}

/** Which budget a refused request would pass. */
export type BudgetRefusal = "server" | "ip";

/**
 * Counts every request held or queued, in all and per IP, and refuses new ones
 * past the limits.
 *
 * @example Refusing past the budget
 * ```ts ignore
 * const budget = new RequestBudget({ maxRequests: 2, maxRequestsPerIp: 1 });
 * if (budget.refusal(session) === null) space.acquire(session, ticket);
 * ```
 */
export class RequestBudget<T> {
  /** The limits in force. */
  readonly limits: RequestBudgetLimits;
  /** Holds in grant order: the first is the oldest. */
  readonly #held = new Set<LockRequest<Session, T>>();
  readonly #waiting = new Set<LockRequest<Session, T>>();
  readonly #perIp = new Map<string, number>();

  /**
   * Starts with nothing counted.
   *
   * @param limits The most requests in all and per IP.
   */
  constructor(limits: RequestBudgetLimits) {
    this.limits = limits;
  }

  /** Requests held and queued now. */
  get size(): number {
    return this.#held.size + this.#waiting.size;
  }

  /** Requests queued now. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * The oldest hold still held.
   *
   * @returns The hold granted first, or `undefined` when nothing is held.
   */
  oldestHold(): LockRequest<Session, T> | undefined {
    for (const request of this.#held) return request;
    return undefined;
  }

  /**
   * Whether one more request from this session passes the budget.
   *
   * @param session Who asks.
   * @returns `null` when it fits, else the budget it would pass.
   */
  refusal(session: Session): BudgetRefusal | null {
    if (this.size >= this.limits.maxRequests) return "server";
    const ip = session.connection.remoteAddr.hostname;
    if ((this.#perIp.get(ip) ?? 0) >= this.limits.maxRequestsPerIp) {
      return "ip";
    }
    return null;
  }

  /**
   * A request joined a queue.
   *
   * @param request The request.
   */
  queued(request: LockRequest<Session, T>): void {
    this.#waiting.add(request);
    this.#count(request, 1);
  }

  /**
   * A request holds its lock, at once or after waiting.
   *
   * @param request The request.
   */
  granted(request: LockRequest<Session, T>): void {
    if (!this.#waiting.delete(request)) this.#count(request, 1);
    this.#held.add(request);
  }

  /**
   * A request left the table: its hold ended, or it stopped waiting
   * ungranted.
   *
   * @param request The request.
   */
  left(request: LockRequest<Session, T>): void {
    if (this.#held.delete(request) || this.#waiting.delete(request)) {
      this.#count(request, -1);
    }
  }

  #count(request: LockRequest<Session, T>, by: 1 | -1): void {
    const ip = request.owner.connection.remoteAddr.hostname;
    const count = (this.#perIp.get(ip) ?? 0) + by;
    if (count === 0) this.#perIp.delete(ip);
    else this.#perIp.set(ip, count);
  }
}
