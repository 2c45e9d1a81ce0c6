/**
 * What a node's mirror refuses, pure: a shared request whose limit is not
 * its lock's (`limit_mismatch`) and a wait that would deadlock
 * (`mirror_deadlock.ts`), before a request is queued and while it waits
 * (two requests that raced, each queued before its node saw the other).
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import type { LockMirror, MirroredRequest } from "./lock_mirror.ts";
import { waitDeadlocks } from "./mirror_deadlock.ts";

/** Why the mirror refuses a request. */
export type MirrorRefusal = "limit_mismatch" | "deadlock";

/** A request about to be queued. */
export interface AskedRequest {
  /** Its owner. */
  owner: string;
  /** Its lock's name. */
  name: string;
  /** The mode asked for. */
  mode: LockMode;
  /** The limit asked for, when shared; `Infinity` when unbounded. */
  limit: number;
  /** Whether it would wait. */
  wait: boolean;
}

/**
 * Whether to refuse a request before it is queued, as one server would.
 *
 * @param mirror The node's mirror.
 * @param asked The request.
 * @param skip Requests to leave out: those the node knows are gone.
 * @returns Why it is refused, or `null`.
 */
export function refusalToQueue(
  mirror: LockMirror,
  asked: AskedRequest,
  skip: (request: MirroredRequest) => boolean,
): MirrorRefusal | null {
  const { owner, name, mode, limit, wait } = asked;
  if (mode === "shared" && (mirror.limit(name, skip) ?? limit) !== limit) {
    return "limit_mismatch";
  }
  if (wait && waitDeadlocks(mirror, owner, name, { mode, limit, skip })) {
    return "deadlock";
  }
  return null;
}

/**
 * Whether to refuse a waiting request: its lock's oldest shared request has
 * another limit (they raced), or, at its first look (`firstLook`), its wait
 * closed a cycle it is the youngest of.
 *
 * @param mirror The node's mirror.
 * @param request The request, as the mirror shows it waiting.
 * @param firstLook Whether the deadlock check is still to be made.
 * @param skip Requests to leave out: those the node knows are gone.
 * @returns Why it is refused, or `null`.
 */
export function refusalWhileWaiting(
  mirror: LockMirror,
  request: MirroredRequest,
  firstLook: boolean,
  skip: (request: MirroredRequest) => boolean,
): MirrorRefusal | null {
  const { owner, name, mode, limit } = request;
  if (mode === "shared" && mirror.limit(name, skip) !== limit) {
    return "limit_mismatch";
  }
  if (
    firstLook &&
    waitDeadlocks(mirror, owner, name, { mode, limit, request, skip })
  ) {
    return "deadlock";
  }
  return null;
}
