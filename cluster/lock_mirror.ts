/**
 * The cluster's lock space as etcd holds it, pure: a node's mirror of every
 * request at one revision, with the grant rule. It knows nothing of etcd's
 * wire, sockets or clocks; the key layout is `request_keys.ts`.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import type { KeyValue } from "./etcd_codec.ts";
import { implicitSlots } from "./grant_slots.ts";
import { TOKEN_SLOTS } from "./group_commit.ts";
import {
  ownerOf,
  parseRequestKey,
  parseRequestValue,
  type RequestValue,
} from "./request_keys.ts";

/**
 * A grant as the mirror saw it: the revision and slot of its fencing token
 * (`tokenFor` in `group_commit.ts`), and when it was made.
 */
export interface Grant {
  /**
   * The revision it came at; 0 when it came before the listing the mirror
   * started from, with no write of its own, so its token is not known here.
   */
  readonly revision: number;
  /** Its slot at that revision. */
  readonly slot: number;
  /** When it was made (ms since the epoch), as far as the mirror knows. */
  readonly at: number;
}

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
  /**
   * Its grant: by the write that put it granted (its value's slot at its
   * mod revision), or by the deletes that left it holding
   * (`grant_slots.ts`). `undefined` while it waits, and while it holds with
   * no slot (more grants at one revision than slots): its node marks it.
   */
  grant: Grant | undefined;
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
      for (const holder of this.#holders(queue)) {
        holder.grant ??= { revision: 0, slot: 0, at: holder.value.since };
      }
    }
    this.revision = revision;
  }

  /**
   * Applies one watch batch, a revision at a time: the requests that come to
   * hold at a revision with no write of their own are granted there
   * ({@linkcode implicitSlots}). A revision's changes all come in one batch.
   *
   * @param events The batch's changes, in order.
   * @param revision The revision the batch brings the mirror to.
   * @param deleted Receives the requests the batch deleted.
   * @returns The names of the locks whose queues changed.
   * @throws {RevisionSplitError} When the batch goes on with a revision the
   *   mirror has applied: its grants at that revision could be wrong, so the
   *   mirror must start again from a listing.
   */
  apply(
    events: { type: "put" | "delete"; kv: KeyValue }[],
    revision: number,
    deleted: MirroredRequest[] = [],
  ): Set<string> {
    const first = events[0]?.kv.modRevision;
    if (first !== undefined && first <= this.revision) {
      throw new RevisionSplitError(first, this.revision);
    }
    const touched = new Set<string>();
    for (let at = 0, end = 0; at < events.length; at = end) {
      const { modRevision } = events[at]!.kv;
      while (events[end]?.kv.modRevision === modRevision) end++;
      this.#applyRevision(events.slice(at, end), touched, deleted);
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

  #applyRevision(
    events: { type: "put" | "delete"; kv: KeyValue }[],
    touched: Set<string>,
    deleted: MirroredRequest[],
  ): void {
    const before = new Map<string, Set<MirroredRequest>>();
    const taken = new Set<number>();
    for (const { type, kv } of events) {
      const name = this.#byKey.get(kv.key)?.name ??
        parseRequestKey(this.#root, kv.key)?.name;
      if (name !== undefined && !before.has(name)) {
        before.set(name, new Set(this.#holders(this.queue(name))));
      }
      const request = type === "put" ? this.#put(kv) : this.#delete(kv.key);
      if (!request) continue;
      touched.add(request.name);
      if (type === "delete") deleted.push(request);
      else if (request.grant?.revision === kv.modRevision) {
        taken.add(request.grant.slot);
      }
    }
    const came: MirroredRequest[] = [];
    for (const [name, held] of before) {
      for (const holder of this.#holders(this.queue(name))) {
        if (!held.has(holder) && holder.grant === undefined) came.push(holder);
      }
    }
    if (came.length === 0) return;
    const revision = events[0]!.kv.modRevision;
    const slots = implicitSlots(taken, came.map((request) => request.key));
    const at = Date.now();
    for (const request of came) {
      const slot = slots.get(request.key);
      if (slot !== undefined) request.grant = { revision, slot, at };
    }
  }

  /**
   * The requests of one lock that hold ({@linkcode holds}).
   *
   * @param name The lock's name.
   * @returns Them, first in line first.
   */
  holders(name: string): MirroredRequest[] {
    return this.#holders(this.queue(name));
  }

  /**
   * The grant rule: an exclusive request holds when it is first in its queue;
   * a shared one when every request before it is shared with the same limit,
   * and fewer than that limit. Once a request holds it holds until deleted:
   * later keys queue after it, and deletes only shorten what is before it.
   *
   * @param key The request's key.
   * @returns Whether it holds; `false` when the mirror has no such key.
   */
  holds(key: string): boolean {
    const request = this.#byKey.get(key);
    return request !== undefined &&
      this.holders(request.name).includes(request);
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

  /**
   * The holders of a queue, by the grant rule in one pass: they are its
   * prefix, each shared with the first one's limit and fewer than it, or the
   * first one alone.
   */
  #holders(queue: readonly MirroredRequest[]): MirroredRequest[] {
    const first = queue[0];
    if (!first) return [];
    if (first.mode === "exclusive") return [first];
    let end = 1;
    while (
      end < queue.length && end < first.limit &&
      queue[end]!.mode === "shared" && queue[end]!.limit === first.limit
    ) end++;
    return queue.slice(0, end);
  }

  #put(kv: KeyValue): MirroredRequest | null {
    const known = this.#byKey.get(kv.key);
    if (known) {
      known.value = parseRequestValue(kv.value);
      known.modRevision = kv.modRevision;
      known.grant = written(kv, known.value) ?? known.grant;
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
      grant: written(kv, value),
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
 * A watch batch that goes on with a revision the mirror has applied: etcd
 * sends a revision's changes in one watch response, so this is never
 * expected; the mirror's grants at that revision may then differ from other
 * nodes', and it starts again from a listing.
 */
export class RevisionSplitError extends Error {
  /**
   * @param revision The batch's first revision.
   * @param applied The mirror's revision.
   */
  constructor(revision: number, applied: number) {
    super(
      `The watch delivered revision ${revision} after the mirror had applied ${applied}`,
    );
    this.name = "RevisionSplitError";
  }
}

/**
 * The grant a write that put a request granted made, if it did: its own, or
 * the one it records (`grantRevision`, no earlier than the key and earlier
 * than the write). A value not ours (a slot that is no slot) grants nothing.
 */
function written(kv: KeyValue, value: RequestValue): Grant | undefined {
  if (!value.granted) return undefined;
  const { slot = 0, grantedAt = value.since, grantRevision: made } = value;
  if (!(Number.isInteger(slot) && slot >= 0 && slot < TOKEN_SLOTS)) {
    return undefined;
  }
  const recorded = Number.isSafeInteger(made) &&
    made! >= kv.createRevision && made! < kv.modRevision;
  return { revision: recorded ? made! : kv.modRevision, slot, at: grantedAt };
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
