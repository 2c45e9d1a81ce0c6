/**
 * Queue notices: the `position` events a waiter asked for (its place in the
 * queue) and the `contention` events a holder asked for (how many wait), over
 * the whole queue, a cluster's when the space is a cluster node's. Both
 * describe state, so only a change is sent, and locks nobody asked about cost
 * one map lookup per change. They leave as the connection's notices, keyed by
 * the request: one pending value per hold or waiter, replaced by the next and
 * never counted toward the output cap, so a holder that stops reading while
 * others churn on its lock keeps it (and reads the latest count later).
 *
 * @module
 */

import type {
  ContentionEvent,
  PositionEvent,
} from "../protocol/lock_protocol.ts";
import type { LockAsk, LockRequest, LockSpace } from "./lock_space.ts";
import type { Session } from "./session.ts";

/** What the notices keep in a request's ticket. */
export interface NoticeState {
  /** Whether the waiter wants position events. */
  notify: boolean;
  /** Whether it is counted as a waiter that wants them. */
  watching: boolean;
  /** The last position sent. */
  position: number;
  /** Whether the holder wants contention notices (and is counted). */
  contention: boolean;
  /** The last waiter count sent. */
  waitersSeen: number;
  /** When granted (ms since the epoch); 0 until the grant is answered. */
  granted: number;
}

type Request = LockRequest<Session, NoticeState>;

/** Sends position and contention events when a lock's queue changes. */
export class QueueNotices {
  readonly #space: LockSpace<LockAsk & NoticeState>;
  /** How many waiters of each lock want position events. */
  readonly #watched = new Map<string, number>();
  /** How many holders of each lock want contention notices. */
  readonly #contended = new Map<string, number>();

  /**
   * Creates the notices of a lock space.
   *
   * @param space Where the queues are read.
   */
  constructor(space: LockSpace<LockAsk & NoticeState>) {
    this.#space = space;
  }

  /**
   * A request started waiting (`true`) or stopped: granted, withdrawn or
   * gone.
   *
   * @param request The request.
   * @param waits Whether it waits now.
   */
  waiting(request: Request, waits: boolean): void {
    const ticket = request.ticket;
    if (waits ? !ticket.notify : !ticket.watching) return;
    ticket.watching = waits;
    // A position not yet written says nothing true once the wait is over.
    if (!waits) request.owner.connection.forget(ticket);
    count(this.#watched, request.name, waits ? 1 : -1);
  }

  /**
   * A hold began (`true`) or ended.
   *
   * @param request The hold.
   * @param holds Whether it holds now.
   */
  holding(request: Request, holds: boolean): void {
    const ticket = request.ticket;
    if (!ticket.contention) return;
    // A hold that ended asks for nothing more.
    ticket.contention = holds;
    if (!holds) request.owner.connection.forget(ticket);
    count(this.#contended, request.name, holds ? 1 : -1);
  }

  /**
   * A lock's queue changed: tells waiters who asked where they now stand, and
   * holders who asked (and were told of their grant) how many wait.
   *
   * @param name The lock.
   */
  changed(name: string): void {
    const watched = this.#watched.has(name);
    const contended = this.#contended.has(name);
    if (!watched && !contended) return;
    const state = this.#space.inspect(name);
    if (state === null) return;
    if (watched) {
      state.waiters.forEach((request, index) => {
        const ticket = request.ticket;
        const position = state.places?.[index] ?? index + 1;
        if (!ticket.watching || ticket.position === position) return;
        ticket.position = position;
        const event: PositionEvent = {
          event: "position",
          lockName: name,
          position: ticket.position,
        };
        request.owner.connection.notify(ticket, event);
      });
    }
    if (contended) {
      const waiters = state.queued ?? state.waiters.length;
      for (const request of state.holders) {
        const ticket = request.ticket;
        if (
          !ticket.contention || ticket.granted === 0 ||
          ticket.waitersSeen === waiters
        ) continue;
        ticket.waitersSeen = waiters;
        const event: ContentionEvent = {
          event: "contention",
          lockName: name,
          waiters,
        };
        request.owner.connection.notify(ticket, event);
      }
    }
  }
}

/** Adds `by` to a name's count; a name whose count drops to 0 is removed. */
function count(counts: Map<string, number>, name: string, by: 1 | -1): void {
  const total = (counts.get(name) ?? 0) + by;
  if (total === 0) counts.delete(name);
  else counts.set(name, total);
}
