/**
 * The txn that queues a lock request: it writes the request's key, marked
 * granted when the request holds at once (the compares of `free_now.ts`).
 *
 * @module
 */

import type { TxnOp } from "./etcd_codec.ts";
import { freeNow, knownFrom, type KnownLock, sharedFits } from "./free_now.ts";
import type { BatchAnswer, BatchWrite } from "./group_commit.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { acquireWrite, readAcquire } from "./request_writes.ts";
import {
  lockPrefix,
  parseRequestValue,
  type RequestValue,
} from "./request_keys.ts";

/** How often a limited request that would not wait asks before it is busy. */
const TRY_LOCK_TRIES = 3;

/** What {@linkcode queueRequest} writes, and what it knows of the lock. */
export interface QueueOptions {
  /** The root prefix. */
  root: string;
  /** The node's lease, which the key is attached to. */
  lease: string;
  /** The limit asked for, when shared; `Infinity` when unbounded. */
  limit: number;
  /** Who asked, for status. */
  peer?: string | undefined;
  /** The client's label, for status. */
  label?: string | undefined;
  /** Whether to queue when the request does not hold at once. */
  wait: boolean;
  /** The lock as the node's mirror shows it. */
  known: KnownLock;
}

/** What became of a request's acquire ({@linkcode queueRequest}). */
export interface Queued {
  /** The revision of the last txn. */
  revision: number;
  /** When granted at once: the revision and slot of its fencing token. */
  grant?: { revision: number; slot: number } | undefined;
  /**
   * The key was there already, written by an older request of the node
   * (a late copy of its acquire): nothing was written for this one.
   */
  occupied: boolean;
}

/**
 * Writes a request's key: granted when it holds at once, else waiting, or,
 * when it would not wait, nothing; only while the key is absent. The failure
 * branch reads the key, so that the request's own write, sent again by the
 * etcd client after its first try committed, finds the request there and so
 * its real place in line. A shared request with a limit that would not wait
 * reads its whole lock instead; when that listing shows it would hold, it
 * asks again with what the listing shows, a few times, before it is taken as
 * busy. Sets the request's `createRevision` (0 when nothing was written)
 * before it returns.
 *
 * @param submit Sends a write in the node's next txn (`GroupCommit`).
 * @param request The request.
 * @param options What to write, and what the node knows of the lock.
 * @returns What became of it.
 * @throws {EtcdError} When etcd does not take the txn.
 */
export async function queueRequest(
  submit: (write: BatchWrite) => Promise<BatchAnswer>,
  request: ClusterRequest,
  options: QueueOptions,
): Promise<Queued> {
  const { key, name, mode, conn, req } = request;
  const { root, wait, lease, limit, peer, label } = options;
  const value: RequestValue = {
    conn,
    req,
    since: Date.now(),
    peer,
    label,
    limit: limit === Infinity ? undefined : limit,
  };
  const retry = !wait && limit !== Infinity;
  const read: TxnOp = retry
    ? { range: { key: lockPrefix(root, name), prefix: true } }
    : { range: { key } };
  let known = options.known;
  for (let tries = 1;; tries++) {
    const compare = freeNow(root, name, mode, limit, known);
    const answer = await submit(
      acquireWrite({ key, name, compare, value, lease, wait, read }),
    );
    const got = readAcquire(answer.response, key);
    const { revision } = answer;
    if (!got.wrote) {
      const mine = got.kv && parseRequestValue(got.kv.value).req === req;
      if (!mine) return { revision, occupied: true };
      // Its own earlier copy: the request is what that copy wrote.
      const earlier = parseRequestValue(got.kv!.value);
      request.createRevision = got.kv!.createRevision;
      const grant = earlier.granted && got.kv!.createRevision ===
          got.kv!.modRevision
        ? { revision: got.kv!.modRevision, slot: earlier.slot ?? 0 }
        : undefined;
      return { revision, grant, occupied: false };
    }
    if (got.granted) {
      request.createRevision = revision;
      const grant = { revision, slot: answer.slot };
      return { revision, grant, occupied: false };
    }
    request.createRevision = got.kv?.createRevision ?? (wait ? revision : 0);
    if (!retry || tries === TRY_LOCK_TRIES) {
      return { revision, occupied: false };
    }
    const requests = knownFrom(root, got.kvs);
    if (
      got.kv !== undefined ||
      requests.some((r) => r.mode === "exclusive") ||
      !sharedFits(requests, limit)
    ) return { revision, occupied: false };
    known = { revision, requests };
  }
}
