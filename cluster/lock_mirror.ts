/**
 * The cluster's lock space as etcd holds it, pure: a node's mirror of every
 * request at one revision, with the grant rule. It knows nothing of etcd's
 * wire, sockets or clocks; the key layout is `request_keys.ts`.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import type { KeyValue } from "./etcd_codec.ts";
import {
  ownerOf,
  parseRequestKey,
  parseRequestValue,
  type RequestValue,
} from "./request_keys.ts";

/** A lock request as the mirror knows it. */
export interface MirroredRequest {
  /** Its etcd key. */
  readonly key: string;
  /** The lock's name. */
  readonly name: string;
  /** Its mode. */
  readonly mode: LockMode;
  /** The node that owns it (its lease id in hex). */
  readonly node: string;
  /** Its connection on that node (in its value); -1 in a value not ours. */
  readonly conn: number;
  /** Its owner across the cluster: {@linkcode ownerOf} its node and conn. */
  readonly owner: string;
  /**
   * The most shared holders it allows at once: the `limit` of a shared
   * request under `l/`, `Infinity` for any other.
   */
  readonly limit: number;
  /** Its place in the queue. */
  readonly createRevision: number;
  /** The revision of its last write (its grant's, once granted). */
  modRevision: number;
  /** What the key holds. */
  value: RequestValue;
}

/**
 * Every lock request of the cluster at one revision, kept from a listing and
 * the watch that follows it. Queues are ordered by create revision.
 */
export class LockMirror {
  /** Every change up to this revision is applied. */
  revision = 0;
  readonly #root: string;
  readonly #queues = new Map<string, MirroredRequest[]>();
  readonly #byKey = new Map<string, MirroredRequest>();
  readonly #byOwner = new Map<string, Set<MirroredRequest>>();

  /** @param root The root prefix. */
  constructor(root: string) {
    this.#root = root;
  }

  /**
   * Starts again from a listing.
   *
   * @param kvs Every key under `<root>/q/` at `revision`.
   * @param revision The listing's revision.
   */
  reset(kvs: KeyValue[], revision: number): void {
    this.#queues.clear();
    this.#byKey.clear();
    this.#byOwner.clear();
    for (const kv of kvs) this.#put(kv);
    for (const queue of this.#queues.values()) {
      queue.sort((a, b) => a.createRevision - b.createRevision);
    }
    this.revision = revision;
  }

  /**
   * Applies one watch batch.
   *
   * @param events The batch's changes, in order.
   * @param revision The revision the batch brings the mirror to.
   * @param deleted Receives the requests the batch deleted.
   * @returns The names of the locks whose queues changed.
   */
  apply(
    events: { type: "put" | "delete"; kv: KeyValue }[],
    revision: number,
    deleted: MirroredRequest[] = [],
  ): Set<string> {
    const touched = new Set<string>();
    for (const { type, kv } of events) {
      const request = type === "put" ? this.#put(kv) : this.#delete(kv.key);
      if (!request) continue;
      touched.add(request.name);
      if (type === "delete") deleted.push(request);
    }
    this.revision = Math.max(this.revision, revision);
    return touched;
  }

  /**
   * One lock's queue, first in line first.
   *
   * @param name The lock's name.
   * @returns Its requests; empty when it has none.
   */
  queue(name: string): readonly MirroredRequest[] {
    return this.#queues.get(name) ?? [];
  }

  /** The names of every lock with a request. */
  names(): IterableIterator<string> {
    return this.#queues.keys();
  }

  /**
   * One owner's requests.
   *
   * @param owner The owner ({@linkcode ownerOf} its node and conn).
   * @returns Them, in no particular order.
   */
  requestsOf(owner: string): Iterable<MirroredRequest> {
    return this.#byOwner.get(owner) ?? [];
  }

  /**
   * One request, by key.
   *
   * @param key Its key.
   * @returns It, or `undefined` when the mirror has no such key.
   */
  get(key: string): MirroredRequest | undefined {
    return this.#byKey.get(key);
  }

  /**
   * The grant rule: an exclusive request holds when it is first in its queue;
   * a shared one when every request before it is shared with the same limit,
   * and fewer than that limit. Once a request holds it holds until deleted:
   * later keys queue after it, and deletes only shorten what is before it.
   *
   * @param key The request's key.
   * @param gone Keys to take as deleted: whether it would hold without them.
   * @returns Whether it holds; `false` when the mirror has no such key.
   */
  holds(key: string, gone?: ReadonlySet<string>): boolean {
    const request = this.#byKey.get(key);
    if (!request) return false;
    const queue = this.queue(request.name);
    let ahead = 0;
    for (const other of queue) {
      if (other === request) return ahead < request.limit;
      if (gone?.has(other.key)) continue;
      if (request.mode === "exclusive" || other.mode === "exclusive") {
        return false;
      }
      if (other.limit !== request.limit) return false;
      ahead++;
    }
    return false;
  }

  /**
   * The limit of a lock's shared requests: that of its oldest one. A shared
   * request with another limit is refused with `limit_mismatch`, as on one
   * server. Two that race are both queued; by the grant rule neither the
   * younger nor any request behind it holds while the older is there, and
   * the younger's own node refuses it.
   *
   * @param name The lock's name.
   * @param skip Requests to leave out: those the caller knows are gone.
   * @returns It (`Infinity` when unbounded), or `undefined` when the lock
   *   has no shared request.
   */
  limit(
    name: string,
    skip?: (request: MirroredRequest) => boolean,
  ): number | undefined {
    for (const other of this.queue(name)) {
      if (other.mode === "shared" && !skip?.(other)) return other.limit;
    }
    return undefined;
  }

  #put(kv: KeyValue): MirroredRequest | null {
    const known = this.#byKey.get(kv.key);
    if (known) {
      known.value = parseRequestValue(kv.value);
      known.modRevision = kv.modRevision;
      return known;
    }
    const parts = parseRequestKey(this.#root, kv.key);
    if (!parts) return null;
    const value = parseRequestValue(kv.value);
    const request: MirroredRequest = {
      key: kv.key,
      name: parts.name,
      mode: parts.mode,
      node: parts.node,
      conn: value.conn ?? -1,
      // A key not written by a node is an owner of its own.
      owner: value.conn === undefined
        ? kv.key
        : ownerOf(parts.node, value.conn),
      limit: parts.limited ? limitOf(value) : Infinity,
      createRevision: kv.createRevision,
      modRevision: kv.modRevision,
      value,
    };
    this.#byKey.set(kv.key, request);
    const owned = this.#byOwner.get(request.owner);
    if (owned) owned.add(request);
    else this.#byOwner.set(request.owner, new Set([request]));
    const queue = this.#queues.get(parts.name);
    if (!queue) {
      this.#queues.set(parts.name, [request]);
      return request;
    }
    let at = queue.length;
    while (at > 0 && queue[at - 1]!.createRevision > request.createRevision) {
      at--;
    }
    queue.splice(at, 0, request);
    return request;
  }

  #delete(key: string): MirroredRequest | null {
    const request = this.#byKey.get(key);
    if (!request) return null;
    this.#byKey.delete(key);
    const owned = this.#byOwner.get(request.owner)!;
    owned.delete(request);
    if (owned.size === 0) this.#byOwner.delete(request.owner);
    const queue = this.#queues.get(request.name)!;
    queue.splice(queue.indexOf(request), 1);
    if (queue.length === 0) this.#queues.delete(request.name);
    return request;
  }
}

/**
 * The limit in the value of a request under `l/`: a whole number of at least
 * 1, else unbounded (an operator's write).
 *
 * @param value The value.
 * @returns The limit; `Infinity` when unbounded.
 */
export function limitOf(value: RequestValue): number {
  const limit = value.limit;
  return typeof limit === "number" && Number.isInteger(limit) && limit >= 1
    ? limit
    : Infinity;
}
