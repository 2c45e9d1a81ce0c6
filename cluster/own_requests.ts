/**
 * A node's own lock requests in the cluster's lock space: each request's
 * state from acquire to its end, and the node's index of them by key, lock
 * and connection.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";

/** What `EtcdLockSpace.acquire` asks. */
export interface AcquireOptions {
  /**
   * The mode.
   *
   * @default {"exclusive"}
   */
  mode?: LockMode | undefined;
  /**
   * Whether to queue when the lock is taken; otherwise the answer is
   * `"busy"`.
   *
   * @default {true}
   */
  wait?: boolean | undefined;
  /**
   * The most shared holders at once, for a shared request: a semaphore.
   *
   * @default {Infinity}
   */
  limit?: number | undefined;
  /** Who asks, for status. */
  peer?: string | undefined;
  /** The client's label, for status. */
  label?: string | undefined;
}

/** The answer of `EtcdLockSpace.acquire`. */
export type AcquireResult =
  | { status: "granted"; request: ClusterRequest }
  | { status: "queued"; request: ClusterRequest }
  | { status: "busy" }
  | { status: "refused"; reason: Refusal };

/**
 * Why a request was turned away before queueing: the connection already
 * holds or waits for that lock, a shared request's limit differs from that of
 * the lock's shared requests, or waiting would close a cycle of owners
 * waiting for each other, as this node's mirror shows it.
 */
export type Refusal =
  | "already_held"
  | "already_waiting"
  | "limit_mismatch"
  | "deadlock";

type State = "pending" | "waiting" | "marking" | "held" | "ended";

/**
 * Why a request's `withdrawn` signal aborts: one shared reason, since
 * `abort()` without one builds a new `DOMException`, stack trace and all,
 * for every request that ends, and nothing reads it.
 */
const ENDED = new DOMException("The request has ended", "AbortError");

/** One request of this node, from acquire to its end. */
export class ClusterRequest {
  /** The fencing token, once held; 0 before. */
  token = 0;
  /** The revision that queued it (its place in line); 0 before it is known. */
  createRevision = 0;
  /** @internal */
  state: State = "pending";
  /** @internal Settles once the acquire txn has answered. */
  queued: Promise<unknown> = Promise.resolve();
  /** @internal Whether its wait was checked for a cycle it closed. */
  checked = false;
  /** @internal Aborts once it has ended, to stop writes on its behalf. */
  readonly withdrawn = new AbortController();

  /**
   * @param key Its etcd key.
   * @param name The lock's name.
   * @param mode Its mode.
   * @param conn Its connection.
   * @param req Its number on this node.
   */
  constructor(
    readonly key: string,
    readonly name: string,
    readonly mode: LockMode,
    readonly conn: number,
    readonly req: number,
  ) {}

  /** Whether it holds the lock. */
  get held(): boolean {
    return this.state === "held";
  }
}

/** A node's requests that have not ended, by key, lock and connection. */
export class OwnRequests {
  readonly #byKey = new Map<string, ClusterRequest>();
  readonly #byName = new Map<string, Set<ClusterRequest>>();
  readonly #byConn = new Map<number, Map<string, ClusterRequest>>();

  /**
   * Adds a request.
   *
   * @param request The request, `"pending"`.
   */
  add(request: ClusterRequest): void {
    this.#byKey.set(request.key, request);
    const ofName = this.#byName.get(request.name);
    if (ofName) ofName.add(request);
    else this.#byName.set(request.name, new Set([request]));
    const ofConn = this.#byConn.get(request.conn);
    if (ofConn) ofConn.set(request.name, request);
    else this.#byConn.set(request.conn, new Map([[request.name, request]]));
  }

  /**
   * Ends a request: it leaves the index and never changes state again.
   *
   * @param request The request.
   */
  end(request: ClusterRequest): void {
    request.state = "ended";
    request.withdrawn.abort(ENDED);
    if (this.#byKey.get(request.key) === request) {
      this.#byKey.delete(request.key);
    }
    const ofName = this.#byName.get(request.name);
    ofName?.delete(request);
    if (ofName?.size === 0) this.#byName.delete(request.name);
    const ofConn = this.#byConn.get(request.conn);
    ofConn?.delete(request.name);
    if (ofConn?.size === 0) this.#byConn.delete(request.conn);
  }

  /**
   * A connection's request for one lock.
   *
   * @param conn The connection.
   * @param name The lock's name.
   * @returns It, or `undefined` when the connection has none.
   */
  find(conn: number, name: string): ClusterRequest | undefined {
    return this.#byConn.get(conn)?.get(name);
  }

  /**
   * Why a connection may not ask for a lock: it holds it or waits for it.
   *
   * @param conn The connection.
   * @param name The lock's name.
   * @returns The refusal, or `null` when it may ask.
   */
  again(conn: number, name: string): "already_held" | "already_waiting" | null {
    const existing = this.find(conn, name);
    if (!existing) return null;
    return existing.held ? "already_held" : "already_waiting";
  }

  /**
   * A request by key.
   *
   * @param key Its key.
   * @returns It, or `undefined` when no live request has that key.
   */
  get(key: string): ClusterRequest | undefined {
    return this.#byKey.get(key);
  }

  /**
   * The live requests of one lock.
   *
   * @param name The lock's name.
   * @returns Them, in no particular order.
   */
  ofName(name: string): Iterable<ClusterRequest> {
    return this.#byName.get(name) ?? [];
  }

  /**
   * The live requests of one connection.
   *
   * @param conn The connection.
   * @returns Them.
   */
  ofConn(conn: number): ClusterRequest[] {
    return [...this.#byConn.get(conn)?.values() ?? []];
  }

  /** Every live request, as a copy that ending them does not disturb. */
  all(): ClusterRequest[] {
    return [...this.#byKey.values()];
  }
}
