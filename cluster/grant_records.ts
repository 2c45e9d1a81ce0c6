/**
 * Records of the grants that deletes made. Such a grant writes nothing: every
 * node that saw its revision knows its token, but a node that lists the lock
 * space later (at its start, or when its watch fell behind a compaction)
 * cannot. So a hold that lasts is recorded in its key: after
 * {@linkcode RECORD_AFTER_MS} of holding, its node writes the grant's
 * revision and slot into its value. Short holds, most of them, write
 * nothing.
 *
 * @module
 */

import type { GroupCommit } from "./group_commit.ts";
import { LinkedAbort } from "./linked_abort.ts";
import type { Grant } from "./lock_mirror.ts";
import type { ClusterRequest } from "./own_requests.ts";
import type { RequestValue } from "./request_keys.ts";
import { markWrite } from "./request_writes.ts";
import { delay } from "../message/io.ts";

/** How long a hold lasts before its grant is recorded, in ms. */
export const RECORD_AFTER_MS = 1_000;

/** What {@linkcode recordGrant} writes with. */
export interface GrantRecorder {
  /** The node's group commit. */
  batch: GroupCommit;
  /** The node's lease. */
  lease: string;
  /** Gives up (the node stops, or its lease is gone). */
  signal: AbortSignal;
  /** The request's value, as the node's mirror shows it now. */
  valueOf: (key: string) => RequestValue | undefined;
}

/**
 * Records a grant that deletes made, once the request has held for
 * {@linkcode RECORD_AFTER_MS}, if it still holds. Only while the key is
 * still the request's (its create revision); a record etcd does not take is
 * not sent again: only a later listing misses it.
 *
 * @param recorder The node's writers.
 * @param request The request, held.
 * @param grant Its grant, as the mirror made it.
 */
export async function recordGrant(
  recorder: GrantRecorder,
  request: ClusterRequest,
  grant: Grant,
): Promise<void> {
  using stop = new LinkedAbort(recorder.signal, request.withdrawn.signal);
  if (await delay(RECORD_AFTER_MS, stop.signal)) return;
  const value = recorder.valueOf(request.key);
  if (value === undefined || value.granted) return;
  const { key, createRevision } = request;
  const lease = recorder.lease;
  const record = markWrite({ key, createRevision, value, lease }, grant);
  await recorder.batch.submit(record).catch(() => {});
}
