/**
 * A cluster node's own requests as its clients see them: placed in the whole
 * cluster's queue as the node's mirror shows it (what `position` and
 * `contention` events read), and answered when etcd decides against them.
 *
 * @module
 */

import { MessageError } from "../message/errors.ts";
import type { LockLostEvent } from "../protocol/lock_protocol.ts";
import type { SpaceLockState } from "../server/lock_space.ts";
import type { Ticket } from "../server/outcomes.ts";
import type { Session } from "../server/session.ts";
import { EtcdError } from "./etcd_errors.ts";
import type { EtcdLockSpace } from "./lock_space.ts";
import { NodeLeaseLostError } from "./node_lease.ts";
import type { NodeRequest, NodeRequests } from "./node_requests.ts";

/**
 * This node's holders and waiters of a lock, each waiter with its place among
 * every node's waiters, and how many wait on every node. A request of another
 * node waits while it does not hold by the grant rule; one of this node as
 * this node knows it (a grant or a delete the mirror does not show yet). This node's waiters that the
 * mirror does not show yet are the youngest: they come last.
 *
 * @param space The node's etcd lock space.
 * @param mine The node's own requests.
 * @param name The lock.
 * @returns Its state here, or `null` when this node has no request for it.
 */
export function nodeState(
  space: EtcdLockSpace,
  mine: NodeRequests,
  name: string,
): SpaceLockState<Session, Ticket> | null {
  const local = mine.inspect(name);
  if (local === null) return null;
  const waiting = new Map<string, NodeRequest>();
  for (const request of local.waiters) {
    waiting.set(request.cluster!.key, request);
  }
  const placed = new Map<NodeRequest, number>();
  let queued = 0;
  const holding = new Set(space.mirror.holders(name));
  for (const mirrored of space.mirror.queue(name)) {
    const own = mirrored.node === space.node;
    if (own ? !waiting.has(mirrored.key) : holding.has(mirrored)) continue;
    queued++;
    if (own) placed.set(waiting.get(mirrored.key)!, queued);
  }
  const places = local.waiters.map((request) =>
    placed.get(request) ?? ++queued
  );
  return { ...local, places, queued };
}

/**
 * Ends a request whose key went without its owner's say: its connection is
 * told (`lock_lost`, when it sent `hello`) and closed.
 *
 * @param request The request.
 * @param token Its fencing token; 0 when it never held.
 * @param reason Why, for the client.
 */
export function closeLost(
  request: NodeRequest,
  token: number,
  reason: string,
): void {
  const session = request.owner;
  if (!session.greeted) {
    session.connection.close();
    return;
  }
  const event: LockLostEvent = {
    event: "lock_lost",
    lockName: request.name,
    token,
    message: reason,
  };
  session.connection.closeWith(event, { reason: "closed" });
}

/**
 * Answers a request etcd could not take; nothing was queued. etcd's errors
 * and a missing node lease are `unavailable` (the node cannot use etcd now);
 * anything else is `internal_error`.
 *
 * @param session Who asked.
 * @param ticket What it asked for.
 * @param why The reason, for the client.
 */
export function failAcquire(
  session: Session,
  ticket: Ticket,
  why: string | Error,
): void {
  session.connection.replyError(
    { id: ticket.id },
    new MessageError(
      why instanceof EtcdError || why instanceof NodeLeaseLostError
        ? "unavailable"
        : "internal_error",
      `Cannot acquire lock "${ticket.name}": ${
        why instanceof Error ? why.message : why
      }`,
    ),
  );
}
