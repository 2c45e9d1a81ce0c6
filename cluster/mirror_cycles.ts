/**
 * The cluster's wait-for graph on a node's mirror, pure: owners are
 * connections (`node.conn`); a request waits for the earlier requests of its
 * queue whose mode conflicts with it. `mirror_deadlock.ts` decides on what
 * these find.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import type { LockMirror, MirroredRequest } from "./lock_mirror.ts";

/**
 * The requests that one in `mode` waits for: the earlier requests of its
 * queue whose mode conflicts with it, held or waiting. With a limit, a
 * shared request waits for every earlier one (the slots are taken in
 * turn), as one server's search counts it.
 *
 * @param mirror The node's mirror.
 * @param name The lock's name.
 * @param mode The mode asked for.
 * @param stop The request itself; absent for one that would join the tail.
 * @param into Receives their owners.
 * @param skip Requests to leave out: those the caller knows are gone.
 * @param limit The limit asked for, when shared.
 */
export function blockers(
  mirror: LockMirror,
  name: string,
  mode: LockMode,
  stop: MirroredRequest | undefined,
  into: string[],
  skip?: (request: MirroredRequest) => boolean,
  limit = stop?.limit ?? Infinity,
): void {
  const all = mode === "exclusive" || limit !== Infinity;
  for (const other of mirror.queue(name)) {
    if (other === stop) return;
    if (skip?.(other)) continue;
    if (all || other.mode === "exclusive") into.push(other.owner);
  }
}

/**
 * Whether `owner`, waiting for `waitsFor`, would wait for itself through
 * the owners those wait for, and so on. Only waiting requests created
 * before `before` count: edges are only added by new waiting requests, so
 * the request that closed a cycle is its youngest, and each node asks this
 * of its own requests alone; exactly one request per cycle is refused.
 *
 * @param mirror The node's mirror.
 * @param owner The owner that would wait.
 * @param waitsFor The owners it would wait for ({@linkcode blockers}).
 * @param before Ignore requests created at or after this revision.
 * @param skip Requests to leave out: those the caller knows are gone.
 * @returns Whether waiting would close a cycle.
 */
export function closesCycle(
  mirror: LockMirror,
  owner: string,
  waitsFor: string[],
  before = Infinity,
  skip?: (request: MirroredRequest) => boolean,
): boolean {
  const seen = new Set<string>();
  const pending = [...waitsFor];
  while (pending.length > 0) {
    const next = pending.pop()!;
    if (next === owner) return true;
    if (seen.has(next)) continue;
    seen.add(next);
    for (const request of mirror.requestsOf(next)) {
      if (request.createRevision >= before || skip?.(request)) continue;
      if (mirror.holds(request.key)) continue;
      blockers(mirror, request.name, request.mode, request, pending, skip);
    }
  }
  return false;
}

/**
 * Whether a request's wait closes a cycle: {@linkcode closesCycle} of its
 * {@linkcode blockers}, counting only requests older than it
 * ({@linkcode olderThan}).
 *
 * @param mirror The node's mirror.
 * @param owner Its owner.
 * @param name Its lock's name.
 * @param mode Its mode.
 * @param request It, in the mirror; absent for one not yet queued.
 * @param skip Requests to leave out: those the caller knows are gone.
 * @param limit Its limit, when shared.
 * @returns Whether waiting would close a cycle.
 */
export function waitClosesCycle(
  mirror: LockMirror,
  owner: string,
  name: string,
  mode: LockMode,
  request?: MirroredRequest,
  skip?: (request: MirroredRequest) => boolean,
  limit = request?.limit ?? Infinity,
): boolean {
  const waitsFor: string[] = [];
  blockers(mirror, name, mode, request, waitsFor, skip, limit);
  if (request === undefined) {
    return closesCycle(mirror, owner, waitsFor, Infinity, skip);
  }
  const younger = (other: MirroredRequest) =>
    skip?.(other) === true || !olderThan(other, request);
  return closesCycle(
    mirror,
    owner,
    waitsFor,
    request.createRevision + 1,
    younger,
  );
}

/**
 * Whether `other` was queued before `request`. A group commit queues several
 * requests of one node in one txn, at one create revision (at most one per
 * lock); of those, the one whose key sorts last counts as the youngest, so
 * that of every cycle exactly one request is the youngest, and is refused.
 *
 * @param other A request of the mirror.
 * @param request The request it is compared with.
 * @returns Whether `other` is older.
 */
export function olderThan(
  other: MirroredRequest,
  request: MirroredRequest,
): boolean {
  return other.createRevision < request.createRevision ||
    (other.createRevision === request.createRevision &&
      other.key < request.key);
}
