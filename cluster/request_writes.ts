/**
 * The writes of one lock request, as ops of a group-committed txn
 * (`group_commit.ts`): the acquire that queues it (and grants it when
 * nothing conflicts), the mark that grants it when the deletes that let it
 * in left no slot for it (`grant_slots.ts`), and the delete that ends it. A grant's value carries its slot in the txn, so that anyone
 * reading the key knows its fencing token; a mark's also the time it was
 * made (`grantedAt`, for `status`).
 *
 * @module
 */

import type { BatchWrite } from "./group_commit.ts";
import type { Compare, KeyValue, TxnOp, TxnOpResponse } from "./etcd_codec.ts";
import type { RequestValue } from "./request_keys.ts";

/** What an acquire writes. */
export interface AcquireWrite {
  /** The request's key. */
  key: string;
  /** The lock's name. */
  name: string;
  /**
   * The compares under which the request holds once written
   * (`free_now.ts`).
   */
  compare: Compare[];
  /** The key's value, before any grant. */
  value: RequestValue;
  /** The node's lease. */
  lease: string;
  /** Whether to queue when the lock is taken; else nothing is written. */
  wait: boolean;
  /** What to read last, whatever the compares find. */
  read: TxnOp;
}

/**
 * The acquire: if the compares hold, the key is put granted; otherwise it
 * is put waiting (only when `wait`), and `read` is read (the key itself, or
 * the whole lock). All of it only while the key is absent: a copy of an
 * older request's acquire that commits late (a member that had it resumes,
 * after the etcd client sent it again elsewhere) finds the key of the
 * request that reuses it and writes nothing; the key is read instead.
 *
 * @param acquire What to write.
 * @returns The write; its answer is a nested txn's, the read last.
 */
export function acquireWrite(acquire: AcquireWrite): BatchWrite {
  const { key, name, compare, value, lease, wait, read } = acquire;
  const waiting = JSON.stringify({ ...value, granted: false });
  const compared = compare.reduce((n, c) => n + c.key.length, 0);
  const absent: Compare = { key, target: "create", result: "==", value: 0 };
  return {
    keys: [key],
    queues: name,
    puts: true,
    bytes: 5 * key.length + compared + 6 * waiting.length,
    op: (slot) => ({
      txn: {
        compare: [absent],
        success: [{
          txn: {
            compare,
            success: [{ put: { key, value: granted(value, slot), lease } }],
            failure: wait
              ? [{ put: { key, value: waiting, lease } }, read]
              : [read],
          },
        }],
        failure: [{ range: { key } }],
      },
    }),
  };
}

/** What an acquire's answer says ({@linkcode acquireWrite}). */
export interface AcquireAnswer {
  /** Whether the key was absent, so that the acquire wrote. */
  wrote: boolean;
  /** Whether it wrote the request granted. */
  granted: boolean;
  /** What the failure branches read: the key, or the whole lock. */
  kvs: KeyValue[];
  /** The key as read, when it exists. */
  kv: KeyValue | undefined;
}

/**
 * Reads an acquire's answer.
 *
 * @param response The answer to the acquire's op.
 * @param key The request's key.
 * @returns What it says.
 */
export function readAcquire(
  response: TxnOpResponse,
  key: string,
): AcquireAnswer {
  const outer = response.txn;
  const inner = outer?.responses[0];
  const wrote = outer?.succeeded === true;
  const read = wrote ? inner?.txn?.responses.at(-1) : inner;
  const kvs = read?.range?.kvs ?? [];
  const granted = wrote && inner?.txn?.succeeded === true;
  return { wrote, granted, kvs, kv: kvs.find((kv) => kv.key === key) };
}

/** The request a mark is for, as this node's mirror shows it. */
export interface MarkedRequest {
  /** Its key. */
  key: string;
  /** Its value. */
  value: RequestValue;
  /** Its node's lease. */
  lease: string;
  /** Its create revision: the mark writes only while the key is that one. */
  createRevision: number;
}

/**
 * The mark of a waiting request of this node that holds with no known
 * token: its value put granted, if its key is still the one the mirror
 * knows. One comparison, and the lease given, so etcd reads the key once.
 * With `made`, the record of a grant the deletes before it made: that
 * grant's revision and slot, instead of the mark's own.
 *
 * @param request The request.
 * @param made A grant already made, to record.
 * @returns The write; its answer's nested txn succeeded when the key was
 *   there.
 */
export function markWrite(
  request: MarkedRequest,
  made?: { revision: number; slot: number; at: number },
): BatchWrite {
  const { key, value, lease, createRevision } = request;
  const grantedAt = made?.at ?? Date.now();
  const compare: Compare = {
    key,
    target: "create",
    result: "==",
    value: createRevision,
  };
  return {
    keys: [key],
    puts: true,
    bytes: key.length * 2 + 3 * JSON.stringify(value).length,
    op: (slot) => ({
      txn: {
        compare: [compare],
        success: [{
          put: {
            key,
            value: granted(
              value,
              made?.slot ?? slot,
              grantedAt,
              made?.revision,
            ),
            lease,
          },
        }],
        failure: [],
      },
    }),
  };
}

/**
 * The delete of a request's key; with its create revision, only while the
 * key is still that request's, so that a copy the etcd client sent again
 * and that commits late never deletes the key of the request that reuses
 * it.
 *
 * @param key The key.
 * @param createRevision The request's create revision, when known.
 * @returns The write.
 */
export function deleteWrite(key: string, createRevision?: number): BatchWrite {
  const remove: TxnOp = { deleteRange: { key } };
  const op: TxnOp = createRevision === undefined ? remove : {
    txn: {
      compare: [{ key, target: "create", result: "==", value: createRevision }],
      success: [remove],
      failure: [],
    },
  };
  return { keys: [key], bytes: 2 * key.length, op: () => op };
}

function granted(
  value: RequestValue,
  slot: number,
  grantedAt?: number,
  grantRevision?: number,
): string {
  return JSON.stringify({
    ...value,
    granted: true,
    slot,
    grantedAt,
    grantRevision,
  });
}
