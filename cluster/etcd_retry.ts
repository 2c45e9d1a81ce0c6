/**
 * Writes that must happen eventually: a grant's mark, and the deletes of
 * released, withdrawn and disconnected requests. Until such a delete is taken
 * the released lock stays held, so it is retried until etcd takes it, or
 * until the node lease is gone (and the key with it).
 *
 * @module
 */

import { delay } from "../message/io.ts";
import type { EtcdClient } from "./etcd.ts";
import { EtcdError, EtcdNoSpaceError } from "./etcd_errors.ts";
import type { Deletion } from "./request_deletes.ts";
import { deleteWrite } from "./request_writes.ts";

/** etcd's default `--max-txn-ops`. */
export const MAX_TXN_OPS = 128;
/** The pause before retrying a write etcd did not take. */
const RETRY_AFTER_MS = 100;

/**
 * Runs `write` until it succeeds, pausing after each etcd error.
 *
 * @param signal Gives up (the lease is gone, or the node stops).
 * @param write The write.
 * @returns Its answer, or `undefined` when `signal` aborted first.
 * @throws Whatever `write` throws that is not an {@linkcode EtcdError}.
 */
export async function untilTaken<T>(
  signal: AbortSignal,
  write: () => Promise<T>,
): Promise<T | undefined> {
  while (!signal.aborted) {
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof EtcdError)) throw error;
      await delay(RETRY_AFTER_MS, signal);
    }
  }
}

/**
 * Deletes keys, in txns of at most {@linkcode MAX_TXN_OPS} deletes sent
 * together, until etcd has taken every delete; each only while the key has
 * the create revision given with it, so that a late copy never deletes the
 * key of a later request that reuses it. On a full quota etcd refuses any
 * txn, deletes included, but still takes a plain DeleteRange (unguarded), so
 * releases keep working.
 *
 * @param etcd The etcd client.
 * @param keys The keys, each with its request's create revision when known.
 * @param signal Gives up.
 */
export async function deleteKeys(
  etcd: EtcdClient,
  keys: readonly Deletion[],
  signal: AbortSignal,
): Promise<void> {
  const batches: Deletion[][] = [];
  for (let i = 0; i < keys.length; i += MAX_TXN_OPS) {
    batches.push(keys.slice(i, i + MAX_TXN_OPS));
  }
  await Promise.all(batches.map(async (batch) => {
    const ops = batch.map(({ key, createRevision }) =>
      deleteWrite(key, createRevision).op(0)
    );
    const taken = await untilTaken(
      signal,
      () =>
        etcd.txn([], ops).then(() => true, (error) => {
          if (error instanceof EtcdNoSpaceError) return false;
          throw error;
        }),
    );
    if (taken === false) {
      await Promise.all(
        batch.map(({ key }) =>
          untilTaken(signal, () => etcd.deleteRange({ key }))
        ),
      );
    }
  }));
}
