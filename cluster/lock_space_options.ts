/**
 * The options of an {@linkcode EtcdLockSpace}: its key prefix, its watch's
 * patience, and where it reports the outcomes that arrive after the fact.
 *
 * @module
 */

import type { ClusterRequest } from "./own_requests.ts";

/** Options of {@linkcode EtcdLockSpace.open}. */
export interface LockSpaceOptions {
  /**
   * The root prefix of every key.
   *
   * @default {"/pklock/v1"}
   */
  prefix?: string | undefined;
  /**
   * How long the watch may stay silent before it is restarted elsewhere (the
   * members' progress-notify interval must be well below it).
   *
   * @default {5000}
   */
  progressTimeoutMs?: number | undefined;
  /** Called once for each request granted after it was queued. */
  onGrant: (request: ClusterRequest) => void;
  /**
   * Called once for each request, held or queued, that ends without its
   * owner's say: its key was deleted by someone else, or the node lease is
   * lost. The owner must treat its lock as gone (close the connection).
   */
  onLost: (request: ClusterRequest, reason: string) => void;
  /**
   * Called once for a queued request refused after the fact, racing one on
   * another node: its enqueue closed a cycle of owners waiting for each
   * other and it is the cycle's youngest request (`deadlock`), or it is a
   * shared request waiting while the lock's oldest shared request has another
   * limit (`limit_mismatch`).
   * Its key is deleted; the owner answers with the reason.
   */
  onRefused: (
    request: ClusterRequest,
    reason: "deadlock" | "limit_mismatch",
  ) => void;
  /**
   * Called after each watch batch with the locks whose queues it changed, on
   * any node, once this node's requests have taken it in; after a re-list,
   * with every lock.
   *
   * @default {Not called}
   */
  onQueues?: ((names: Iterable<string>) => void) | undefined;
}
