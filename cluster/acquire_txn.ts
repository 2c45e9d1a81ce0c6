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
import { acquireWrite } from "./request_writes.ts";
import { lockPrefix, type RequestValue } from "./request_keys.ts";

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

/**
 * Writes a request's key: granted when it holds at once, else waiting, or,
 * when it would not wait, nothing. The failure branch reads the key (a
 * retried txn whose first try committed finds it, so its real place in line
 * is known). A shared request with a limit that would not wait reads its
 * whole lock instead; when that listing shows it would hold, it asks again
 * with what the listing shows, a few times, before it is taken as busy.
 *
 * @param submit Sends a write in the node's next txn (`GroupCommit`).
 * @param request The request.
 * @param options What to write, and what the node knows of the lock.
 * @returns The answer of the last write: its nested txn `succeeded` when
 *   granted.
 * @throws {EtcdError} When etcd does not take the txn.
 */
export async function queueRequest(
  submit: (write: BatchWrite) => Promise<BatchAnswer>,
  request: ClusterRequest,
  options: QueueOptions,
): Promise<BatchAnswer> {
  const { key, name, mode, conn } = request;
  const { root, wait, lease, limit, peer, label } = options;
  const value: RequestValue = {
    conn,
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
    const branch = answer.response.txn;
    if (branch?.succeeded || !retry || tries === TRY_LOCK_TRIES) return answer;
    const kvs = branch?.responses.at(-1)?.range?.kvs ?? [];
    const requests = knownFrom(root, kvs);
    if (
      kvs.some((kv) => kv.key === key) ||
      requests.some((r) => r.mode === "exclusive") ||
      !sharedFits(requests, limit)
    ) return answer;
    known = { revision: answer.revision, requests };
  }
}
