/**
 * The seam between what a command means and where lock state lives.
 *
 * The lock server's commands, sessions, replies, journal and notices talk to
 * a {@linkcode LockSpace}; the space reports every outcome back through one
 * {@linkcode LockSpaceEvents} sink: a grant, a hold's end with its cause, a
 * withdrawal with its reason, a refusal, and a queue that changed. Nothing is
 * answered from a method's return value, so an outcome may be reported during
 * the call that caused it or any time later, and the server answers it the
 * same way.
 *
 * {@linkcode LocalLockSpace} keeps the locks in this process's
 * {@linkcode LockTable} and reports synchronously, once the table is
 * consistent again. A replicated space (etcd) would report grants when its
 * watch shows them and refusals when its round trip answers, behind the same
 * two interfaces.
 *
 * @module
 */

import {
  type LockMode,
  type LockRequest,
  type LockState,
  LockTable,
  type Refusal,
} from "./lock_table.ts";
import type { Session } from "./session.ts";

export type { LockMode, LockRequest, LockState, Refusal };

/** How a hold ended: the holder's release, its connection's end, or by force. */
export type ReleaseCause = "client" | "disconnect" | "force";

/**
 * Why a waiting request left the queue ungranted: its holder withdrew it
 * (`release` while waiting, or the client gave up), its wait ran out, or its
 * connection ended.
 */
export type WithdrawCause = "cancelled" | "timeout" | "disconnect";

/** What a request asks for; the server's ticket for it carries this. */
export interface LockAsk {
  /** The lock's name. */
  readonly name: string;
  /** `exclusive` or `shared`. */
  readonly mode: LockMode;
  /** The most shared holders at once; `undefined` when unbounded. */
  readonly limit?: number | undefined;
  /**
   * How long it may wait, in milliseconds: 0 to be refused with `busy`
   * instead of queueing, `undefined` to wait for ever.
   */
  readonly wait: number | undefined;
}

/**
 * What a lock space tells the server; each request gets exactly one of
 * `granted`, `withdrawn` or `refused` first, and a granted one `released`
 * once.
 */
export interface LockSpaceEvents<T extends LockAsk> {
  /** A request holds the lock now, at once or after waiting. */
  granted(request: LockRequest<Session, T>): void;
  /** A request waits in the lock's queue. */
  queued(request: LockRequest<Session, T>): void;
  /** A hold ended; reported before the grants it allows. */
  released(request: LockRequest<Session, T>, cause: ReleaseCause): void;
  /** A waiting request left the queue ungranted. */
  withdrawn(request: LockRequest<Session, T>, cause: WithdrawCause): void;
  /** A request was turned away; it never entered the space. */
  refused(session: Session, ticket: T, code: Refusal): void;
  /** A lock's holders or queue changed, after the events that changed it. */
  changed(name: string): void;
}

/**
 * One lock's state as a lock space shows it to the server. A cluster node's
 * shows its own requests, each waiter with its place in the whole cluster's
 * queue.
 */
export interface SpaceLockState<O, T> extends LockState<O, T> {
  /**
   * Each waiter's place in the lock's whole queue, from 1.
   *
   * @default {Its index in `waiters` plus 1}
   */
  places?: number[] | undefined;
  /**
   * How many wait in the lock's whole queue.
   *
   * @default {The length of `waiters`}
   */
  queued?: number | undefined;
}

/** Where the lock server's locks live. */
export interface LockSpace<T extends LockAsk> {
  /**
   * Asks for a lock; the outcome is reported as `granted`, `queued` or
   * `refused`.
   *
   * @param session Who asks.
   * @param ticket What it asks for, and the server's data for answering it.
   */
  acquire(session: Session, ticket: T): void;
  /**
   * Releases a session's hold on a lock, or withdraws its waiting request
   * (`cancelled`).
   *
   * @param session Who releases.
   * @param name The lock.
   * @returns `false` when the session has no request for it.
   */
  release(session: Session, name: string): boolean;
  /**
   * Withdraws a request if it still waits; does nothing once it holds.
   *
   * @param request The waiting request.
   * @param cause Why.
   */
  withdraw(request: LockRequest<Session, T>, cause: WithdrawCause): void;
  /**
   * Ends every request of a session whose connection closed.
   *
   * @param session Who is gone.
   * @param cause `disconnect`, or `force` after a forced release.
   */
  releaseAll(session: Session, cause: "disconnect" | "force"): void;
  /**
   * Grants the requests whose turn came while no fencing token could be had,
   * once tokens can be had again.
   */
  resumeGrants(): void;
  /**
   * How many requests a session has, held or waiting.
   *
   * @param session Whose.
   * @returns The count.
   */
  countOf(session: Session): number;
  /**
   * One lock's holders and queue.
   *
   * @param name The lock.
   * @returns Its state, or `null` when nobody holds or waits for it.
   */
  inspect(name: string): SpaceLockState<Session, T> | null;
  /**
   * How many hold and wait for a lock.
   *
   * @param name The lock.
   * @returns The counts, or `null` when nobody holds or waits for it.
   */
  count(name: string): { holders: number; waiters: number } | null;
  /**
   * Every lock held or waited for.
   *
   * @returns The names, in no particular order.
   */
  names(): Iterable<string>;
}

/**
 * Who a request belongs to, as `status` shows it: a session of this server,
 * or a client of another node of a cluster.
 */
export interface RequestOwner {
  /** The connection's id on its server. */
  readonly id: number;
  /** The client's address and port. */
  readonly peer: string;
  /** The label the client gave in `hello`. */
  readonly label: string | undefined;
  /** The cluster node the client is on; `undefined` on a single server. */
  readonly node?: string | undefined;
}

/** What `status` reads: every lock's holders and queue. */
export interface LockView<T> {
  /**
   * Every lock held or waited for.
   *
   * @returns The names, in no particular order.
   */
  names(): Iterable<string>;
  /**
   * One lock's holders and queue.
   *
   * @param name The lock.
   * @returns Its state, or `null` when nobody holds or waits for it.
   */
  inspect(name: string): LockState<RequestOwner, T> | null;
}

/** The cluster a shared lock space belongs to, as `status` shows it. */
export interface ClusterView {
  /** This node's id. */
  node: string;
  /** Every live node's id, sorted. */
  nodes: string[];
}

/**
 * A lock space shared with other servers (the nodes of a cluster): its
 * `inspect` and `names` show this server's requests, `whole` every node's.
 */
export interface SharedLockSpace<T extends LockAsk, V> extends LockSpace<T> {
  /** Every node's locks, for `status`. */
  readonly whole: LockView<V>;
  /**
   * This node and the live nodes.
   *
   * @returns The cluster's view.
   */
  cluster(): ClusterView;
  /**
   * Ends the holds of a lock that clients of other nodes have: their keys are
   * deleted, and their nodes close their connections.
   *
   * @param name The lock.
   * @returns The holds ended.
   */
  forceRemote(name: string): LockRequest<RequestOwner, V>[];
}

/**
 * Whether a lock space is shared with other nodes.
 *
 * @param space The lock space.
 * @returns `true` for a {@linkcode SharedLockSpace}.
 */
export function isShared<T extends LockAsk, V>(
  space: LockSpace<T>,
): space is SharedLockSpace<T, V> {
  return "whole" in space;
}

/** Options of {@linkcode LocalLockSpace}. */
export interface LocalLockSpaceOptions {
  /**
   * Issues fencing tokens; must strictly increase. It throws when no token
   * can be had now: a queued request whose turn came then waits at the head
   * of its queue until {@linkcode LockSpace.resumeGrants}.
   *
   * @default {A counter starting at 1}
   */
  nextToken?: (() => number) | undefined;
}

/**
 * The lock space of one process: a {@linkcode LockTable}, reporting each
 * outcome during the call that caused it.
 *
 * @example Reporting to a sink
 * ```ts ignore
 * const space = new LocalLockSpace(events);
 * space.acquire(session, ticket);
 * ```
 */
export class LocalLockSpace<T extends LockAsk> implements LockSpace<T> {
  readonly #table: LockTable<Session, T>;
  readonly #events: LockSpaceEvents<T>;
  /** The grants of the call under way, reported once it is done. */
  readonly #granted: LockRequest<Session, T>[] = [];
  #reporting = false;
  /** The index in `#granted` of the grant being reported. */
  #next = 0;

  /**
   * Creates an empty lock space.
   *
   * @param events Where outcomes go.
   * @param options The token source.
   */
  constructor(events: LockSpaceEvents<T>, options: LocalLockSpaceOptions = {}) {
    this.#table = new LockTable({ nextToken: options.nextToken });
    this.#events = events;
  }

  acquire(session: Session, ticket: T): void {
    const { name, mode, wait, limit } = ticket;
    const request = this.#table.acquire(
      session,
      name,
      mode,
      ticket,
      wait !== 0,
      limit,
    );
    if (typeof request === "string") {
      this.#events.refused(session, ticket, request);
      return;
    }
    if (request.held) this.#events.granted(request);
    else this.#events.queued(request);
    this.#events.changed(name);
  }

  release(session: Session, name: string): boolean {
    const request = this.#table.release(session, name, this.#granted);
    if (request === null) return false;
    if (request.held) this.#events.released(request, "client");
    this.#report();
    if (!request.held) this.#events.withdrawn(request, "cancelled");
    this.#events.changed(name);
    return true;
  }

  withdraw(request: LockRequest<Session, T>, cause: WithdrawCause): void {
    if (!this.#table.withdraw(request, this.#granted)) return;
    this.#report();
    this.#events.withdrawn(request, cause);
    this.#events.changed(request.name);
  }

  releaseAll(session: Session, cause: "disconnect" | "force"): void {
    const removed = this.#table.releaseAll(session, this.#granted);
    for (const request of removed) {
      if (request.held && !this.#unreported(request)) {
        this.#events.released(request, cause);
      } else {
        this.#events.withdrawn(request, "disconnect");
      }
    }
    this.#report();
    for (const request of removed) this.#events.changed(request.name);
  }

  resumeGrants(): void {
    this.#table.resume(this.#granted);
    const names = new Set(this.#granted.map((request) => request.name));
    this.#report();
    for (const name of names) this.#events.changed(name);
  }

  countOf(session: Session): number {
    return this.#table.countOf(session);
  }

  inspect(name: string): LockState<Session, T> | null {
    return this.#table.inspect(name);
  }

  count(name: string): { holders: number; waiters: number } | null {
    return this.#table.count(name);
  }

  names(): Iterable<string> {
    return this.#table.names();
  }

  /**
   * Reports the grants the table pushed. Answering a grant can close its
   * connection (its output cap), whose release pushes more grants while this
   * loop runs: the outer loop reports those too, each once.
   */
  #report(): void {
    if (this.#reporting) return;
    this.#reporting = true;
    const granted = this.#granted;
    try {
      for (this.#next = 0; this.#next < granted.length; this.#next++) {
        this.#events.granted(granted[this.#next]!);
      }
    } finally {
      granted.length = 0;
      this.#reporting = false;
    }
  }

  /**
   * Whether a hold whose owner is gone was granted but not reported yet (the
   * owner's connection closed while an earlier grant was answered): nobody was
   * told, so it ends as a withdrawal, and it is taken off the list.
   */
  #unreported(request: LockRequest<Session, T>): boolean {
    if (!this.#reporting) return false;
    const at = this.#granted.indexOf(request, this.#next + 1);
    if (at < 0) return false;
    this.#granted.splice(at, 1);
    return true;
  }
}
