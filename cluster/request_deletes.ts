/**
 * The deletes that end requests: a release, a withdrawal, a disconnect. A
 * delete is all it takes to let the next requests in: they hold once it
 * commits, by the grant rule, and each node's mirror grants them at its
 * revision (`grant_slots.ts`), with no write of their own.
 *
 * @module
 */

import type { EtcdClient } from "./etcd.ts";
import { EtcdNoSpaceError } from "./etcd_errors.ts";
import { untilTaken } from "./etcd_retry.ts";
import { type GroupCommit, MAX_BATCH_OPS } from "./group_commit.ts";
import { deleteWrite } from "./request_writes.ts";
import { delay } from "../message/io.ts";

/** What {@linkcode deleteRequestKeys} writes with. */
export interface KeyDeleters {
  /** The etcd client, for a plain delete on a full quota. */
  etcd: EtcdClient;
  /** The node's group commit. */
  batch: GroupCommit;
  /** Gives up (the node stops, or its lease is gone). */
  signal: AbortSignal;
  /**
   * Called once for each key when its delete has ended: with the revision
   * etcd took it at, or `undefined` when the first try failed (a failed try
   * may still commit later) or the node stopped first.
   */
  onDeleted?: ((key: string, revision: number | undefined) => void) | undefined;
}

/**
 * Deletes keys, each until etcd takes it; many keys go a txn's worth at a
 * time, each sent as soon as it is prepared. When etcd refuses its txn for a
 * full quota (`NOSPACE`), a key goes by a plain DeleteRange, which etcd still
 * takes.
 *
 * @param deleters The node's writers.
 * @param keys The keys, each with its request's create revision when known.
 */
export async function deleteRequestKeys(
  deleters: KeyDeleters,
  keys: readonly Deletion[],
): Promise<void> {
  const deletes: Promise<unknown>[] = [];
  for (let at = 0; at < keys.length; at += MAX_BATCH_OPS) {
    // Lets the txns of the keys so far leave while the rest are prepared.
    if (at > 0) await delay(0, deleters.signal);
    for (const key of keys.slice(at, at + MAX_BATCH_OPS)) {
      const done = deleteOne(deleters, key);
      // Handled here, thrown below: a failure while a later chunk waits.
      done.catch(() => {});
      deletes.push(done);
    }
  }
  await Promise.all(deletes);
}

/** A key to delete, and its request's create revision when known. */
export interface Deletion {
  /** The key. */
  readonly key: string;
  /** The create revision the key must still have (`deleteWrite`). */
  readonly createRevision?: number | undefined;
}

/** One key's delete, until etcd takes it. */
async function deleteOne(
  deleters: KeyDeleters,
  deletion: Deletion,
): Promise<void> {
  const { etcd, batch, signal, onDeleted } = deleters;
  const { key, createRevision } = deletion;
  const write = deleteWrite(key, createRevision);
  let tries = 0;
  const revision = await untilTaken(signal, async () => {
    const first = tries++ === 0;
    try {
      const answer = await batch.submit(write);
      return first ? answer.revision : undefined;
    } catch (error) {
      if (!(error instanceof EtcdNoSpaceError)) throw error;
      await etcd.deleteRange({ key });
      return undefined;
    }
  });
  onDeleted?.(key, revision);
}
