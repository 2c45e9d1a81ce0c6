/**
 * What the server does with each outcome a {@linkcode LockSpace} reports: it
 * answers the request, keeps its timers (the wait's timeout, the hold's
 * alarm), its queue notices and its journal entries. One path for every
 * grant, whether it came at once or after a wait, in this call or later.
 *
 * @module
 */

import { MessageError } from "../message/errors.ts";
import type { HoldAlarmEvent, LockResult } from "../protocol/lock_protocol.ts";
import type { HoldAlarms } from "./hold_alarms.ts";
import type { Journal } from "./journal.ts";
import {
  isShared,
  type LockAsk,
  type LockRequest,
  type LockSpace,
  type LockSpaceEvents,
  type Refusal,
  type ReleaseCause,
  type WithdrawCause,
} from "./lock_space.ts";
import { type NoticeState, QueueNotices } from "./queue_notices.ts";
import { RequestBudget } from "./request_budget.ts";
import type { Session } from "./session.ts";

/** The server's data for a request, with what it asks for. */
export interface Ticket extends LockAsk, NoticeState {
  /** The RPC id to answer. */
  readonly id: unknown;
  /** The wait's timeout while waiting; the hold-time alarm while held. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** When asked for (ms since the epoch). */
  readonly asked: number;
}

/** A request in the lock space, as the server sees it. */
type Request = LockRequest<Session, Ticket>;

const TIMEOUT: LockResult = { status: "timeout" };
const CANCELLED: LockResult = { status: "cancelled" };
const BUSY: LockResult = { status: "busy" };
const UNLIMITED = { maxRequests: Infinity, maxRequestsPerIp: Infinity };

/**
 * Answers the outcomes of lock requests and keeps what follows from them.
 *
 * @example Wiring it to a lock space
 * ```ts ignore
 * const outcomes = new LockOutcomes(journal, alarms, (events) =>
 *   new LocalLockSpace(events));
 * outcomes.space.acquire(session, ticket);
 * ```
 */
export class LockOutcomes implements LockSpaceEvents<Ticket> {
  /** The lock space whose outcomes these are. */
  readonly space: LockSpace<Ticket>;
  /** Every request held and queued, against the server's budget. */
  readonly budget: RequestBudget<Ticket>;
  readonly #journal: Journal;
  readonly #alarms: HoldAlarms | undefined;
  readonly #notices: QueueNotices;

  /**
   * Makes the lock space through `space`, reporting to these outcomes.
   *
   * @param journal Where each outcome is logged, audited and counted.
   * @param alarms Hold-time thresholds, when alarms are on.
   * @param space Makes the lock space that reports to these outcomes.
   * @param budget Counts the requests held and queued.
   */
  constructor(
    journal: Journal,
    alarms: HoldAlarms | undefined,
    space: (events: LockSpaceEvents<Ticket>) => LockSpace<Ticket>,
    budget: RequestBudget<Ticket> = new RequestBudget(UNLIMITED),
  ) {
    this.budget = budget;
    this.#journal = journal;
    this.#alarms = alarms;
    this.space = space(this);
    this.#notices = new QueueNotices(this.space);
  }

  queued(request: Request): void {
    this.budget.queued(request);
    this.#journal.queued(request);
    const wait = request.ticket.wait;
    if (wait !== undefined) {
      request.ticket.timer = setTimeout(
        () => this.space.withdraw(request, "timeout"),
        wait,
      );
    }
    this.#notices.waiting(request, true);
  }

  granted(request: Request): void {
    const ticket = request.ticket;
    this.#stopWaiting(request);
    this.budget.granted(request);
    ticket.granted = Date.now();
    this.#journal.granted(request);
    this.#notices.holding(request, true);
    const threshold = this.#alarms?.thresholdFor(request.name);
    if (threshold !== undefined) {
      ticket.timer = setTimeout(
        () => this.#alarm(request, threshold),
        threshold,
      );
    }
    // Last: a reply past the output cap closes the connection, which
    // releases this hold at once.
    request.owner.connection.reply(ticket.id, {
      status: "ok",
      token: request.token,
    });
  }

  released(request: Request, cause: ReleaseCause): void {
    this.budget.left(request);
    clearTimeout(request.ticket.timer);
    this.#notices.holding(request, false);
    this.#journal.released(request, cause);
  }

  withdrawn(request: Request, cause: WithdrawCause): void {
    this.budget.left(request);
    this.#stopWaiting(request);
    this.#journal.withdrawn(request, cause);
    if (cause === "disconnect") return;
    request.owner.connection.reply(
      request.ticket.id,
      cause === "timeout" ? TIMEOUT : CANCELLED,
    );
  }

  refused(session: Session, ticket: Ticket, code: Refusal): void {
    if (code === "already_held" && !session.greeted) {
      this.#relocked(session, ticket);
      return;
    }
    this.#journal.refused(session, ticket, code);
    if (code === "busy") {
      session.connection.reply(ticket.id, BUSY);
    } else {
      session.connection.replyError(
        { id: ticket.id },
        new MessageError(code, this.#refusalText(code, ticket)),
      );
    }
  }

  changed(name: string): void {
    this.#notices.changed(name);
    if (this.#journal.tracksLocks() && this.space.count(name) === null) {
      this.#journal.vacated(name);
    }
  }

  /**
   * A legacy connection asked again for a lock it holds. The PHP server
   * answered `ok` (and one `unlock` freed it); its client, given no `result`,
   * waits out its time limit and then sends `unlock`, which would free the
   * lock it still holds. So it is answered as the PHP server did, with the
   * hold's token; nothing changes.
   */
  #relocked(session: Session, ticket: Ticket): void {
    const hold = this.space.inspect(ticket.name)?.holders.find((request) =>
      request.owner === session
    );
    session.connection.reply(ticket.id, { status: "ok", token: hold?.token });
  }

  /** The sentence of a refusal other than `busy`. */
  #refusalText(code: Exclude<Refusal, "busy">, ticket: Ticket): string {
    if (code !== "limit_mismatch") return refusalText(code, ticket.name);
    // A cluster node's own requests may not be the lock's.
    const view = isShared(this.space) ? this.space.whole : this.space;
    const limit = view.inspect(ticket.name)?.limit;
    return `Lock "${ticket.name}" is held or waited for with ${
      limitText(limit ?? Infinity)
    }, not ${limitText(ticket.limit ?? Infinity)}`;
  }

  /** A request stopped waiting: granted, withdrawn, timed out or gone. */
  #stopWaiting(request: Request): void {
    clearTimeout(request.ticket.timer);
    request.ticket.timer = undefined;
    this.#notices.waiting(request, false);
  }

  /** A hold passed its alarm threshold: warn, count, tell the holder. */
  #alarm(request: Request, threshold: number): void {
    const heldFor = Date.now() - request.ticket.granted;
    this.#journal.alarmed(request, heldFor, threshold);
    const event: HoldAlarmEvent = {
      event: "hold_alarm",
      lockName: request.name,
      token: request.token,
      heldFor,
      threshold,
    };
    request.owner.connection.send(event);
  }
}

/** A limit in words. */
function limitText(limit: number): string {
  return limit === Infinity ? "no limit" : `a limit of ${limit}`;
}

/** The sentence of a refusal, by its code. */
function refusalText(
  code: "already_held" | "already_waiting" | "deadlock",
  name: string,
): string {
  switch (code) {
    case "already_held":
      return `This connection already holds lock "${name}"`;
    case "already_waiting":
      return `This connection already waits for lock "${name}"`;
    case "deadlock":
      return `Waiting for lock "${name}" would deadlock: its holders wait, directly or not, for a lock this connection holds`;
  }
}
