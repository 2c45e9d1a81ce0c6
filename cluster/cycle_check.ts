/**
 * The after-the-fact deadlock check of a node's own queued request, pure:
 * whether its wait closed a cycle of owners waiting for each other, counting
 * only requests older than it. A group commit queues several requests of one
 * node in one txn, at one create revision; of those, the one whose key sorts
 * last counts as the youngest, so that exactly one request of a cycle is its
 * youngest, and is refused.
 *
 * @module
 */

import type { LockMirror, MirroredRequest } from "./lock_mirror.ts";

/**
 * Whether a queued request's wait closed a cycle it is the youngest of.
 *
 * @param mirror The node's mirror.
 * @param request The request, as the mirror shows it waiting.
 * @param gone Requests to leave out: those the caller knows are gone.
 * @returns Whether to refuse it.
 */
export function closedCycle(
  mirror: LockMirror,
  request: MirroredRequest,
  gone: (request: MirroredRequest) => boolean,
): boolean {
  const { owner, name, mode, createRevision, key } = request;
  const waitsFor: string[] = [];
  mirror.blockers(name, mode, request, waitsFor, gone);
  const younger = (other: MirroredRequest) =>
    gone(other) ||
    (other.createRevision === createRevision && other.key >= key);
  return mirror.closesCycle(owner, waitsFor, createRevision + 1, younger);
}
