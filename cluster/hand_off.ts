/**
 * Hand-off in the releasing txn: the delete of a request's key carries the
 * marks of the requests that hold once it is gone, whichever node they are
 * on, so a waiter is granted one txn after the release, not two (the delete,
 * then its own node's mark once its watch shows it holding). An owner tells
 * its client once its mirror shows the mark, or, on the deleting node, once
 * etcd answers; a request its owner has ended meanwhile is deleted, as it
 * would be after its own mark.
 *
 * Why a mark written by the releasing node is right: its mirror shows the
 * waiter, so it has seen every key created before the waiter, and such keys
 * can only go, never come. If the waiter holds in the mirror once the
 * released key is taken as gone, it holds in the store once the txn has
 * deleted that key, whatever else happened meanwhile; the mark's comparison
 * (the waiter's key unchanged since the mirror saw it) makes sure the mark
 * writes nothing when sent again or when the waiter went.
 *
 * @module
 */

import type { EtcdClient } from "./etcd.ts";
import { EtcdNoSpaceError } from "./etcd_errors.ts";
import { untilTaken } from "./etcd_retry.ts";
import {
  type BatchAnswer,
  type GroupCommit,
  MAX_BATCH_OPS,
} from "./group_commit.ts";
import type { LockMirror, MirroredRequest } from "./lock_mirror.ts";
import { deleteWrite, markWrite } from "./request_writes.ts";
import { delay } from "../message/io.ts";

/**
 * Keys prepared between two turns of the event loop: a txn's worth when each
 * frees one waiter (a delete and a mark each), so that the first txn of a
 * disconnect with many locks leaves before the last key is prepared.
 */
const CHUNK = (MAX_BATCH_OPS - 1) / 2;

/**
 * The requests that hold once `key` is deleted and not before, as the
 * mirror shows them: those not yet marked and not left out by `skip`, at
 * most enough to fit one txn with the delete.
 *
 * @param mirror The node's mirror.
 * @param key The key to be deleted.
 * @param skip Requests not to mark (their owner has ended them).
 * @returns The requests to mark, first in line first.
 */
export function successors(
  mirror: LockMirror,
  key: string,
  skip: (request: MirroredRequest) => boolean,
): MirroredRequest[] {
  const released = mirror.get(key);
  if (!released) return [];
  const gone = new Set([key]);
  const next: MirroredRequest[] = [];
  for (const other of mirror.queue(released.name)) {
    if (other === released) continue;
    // Holders are a prefix of the queue: past the first that waits, all do.
    if (!mirror.holds(other.key, gone) || next.length >= MAX_BATCH_OPS - 1) {
      break;
    }
    if (!other.value.granted && !skip(other) && !mirror.holds(other.key)) {
      next.push(other);
    }
  }
  return next;
}

/** What {@linkcode deleteHandingOff} writes with. */
export interface HandOff {
  /** The etcd client, for a plain delete on a full quota. */
  etcd: EtcdClient;
  /** The node's group commit. */
  batch: GroupCommit;
  /** The node's mirror. */
  mirror: LockMirror;
  /** Requests not to mark. */
  skip: (request: MirroredRequest) => boolean;
  /** Gives up (the node stops, or its lease is gone). */
  signal: AbortSignal;
  /**
   * Called for each mark that committed, as soon as etcd answers: the owner
   * of a request of this node need not wait for its watch.
   */
  onMarked: (request: MirroredRequest, answer: BatchAnswer) => void;
  /**
   * Called once for each key when its delete has ended: with the revision
   * etcd took it at, or `undefined` when the first try failed (a failed try
   * may still commit later) or the node stopped first.
   */
  onDeleted?: ((key: string, revision: number | undefined) => void) | undefined;
}

/**
 * Deletes keys, each with the marks of its {@linkcode successors}, until
 * etcd takes it; many keys go a txn's worth at a time, each sent as soon as
 * it is prepared. On a full quota etcd refuses any txn that puts, so a key
 * goes by a plain DeleteRange, which etcd still takes, and its successors
 * wait for marks of their own.
 *
 * @param handOff The node's writers.
 * @param keys The keys, each with its request's create revision when known.
 */
export async function deleteHandingOff(
  handOff: HandOff,
  keys: readonly Deletion[],
): Promise<void> {
  const deletes: Promise<unknown>[] = [];
  for (let at = 0; at < keys.length; at += CHUNK) {
    // Lets the txns of the keys so far leave while the rest are prepared.
    if (at > 0) await delay(0, handOff.signal);
    for (const key of keys.slice(at, at + CHUNK)) {
      const done = deleteOne(handOff, key);
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

/** One key's delete, with the marks of its successors, until etcd takes it. */
async function deleteOne(handOff: HandOff, deletion: Deletion): Promise<void> {
  const { etcd, batch, mirror, skip, signal, onMarked, onDeleted } = handOff;
  const { key, createRevision } = deletion;
  let tries = 0;
  const revision = await untilTaken(signal, async () => {
    const first = tries++ === 0;
    const next = successors(mirror, key, skip);
    const marks = next.map((request) =>
      markWrite({ ...request, lease: BigInt(`0x${request.node}`).toString() })
    );
    try {
      const [deleted, ...answers] = await batch.submitAll([
        deleteWrite(key, createRevision),
        ...marks,
      ]);
      answers.forEach((answer, i) => {
        if (answer.response.txn?.succeeded) onMarked(next[i]!, answer);
      });
      return first ? deleted!.revision : undefined;
    } catch (error) {
      if (!(error instanceof EtcdNoSpaceError)) throw error;
      await etcd.deleteRange({ key });
      return undefined;
    }
  });
  onDeleted?.(key, revision);
}
