/**
 * Group commit of a node's writes to etcd: while a txn is under way, the
 * writes that come meanwhile (acquires, grant marks, deletes) wait, and go
 * together in one txn when it returns, each as one op of it (an acquire or a
 * mark as a nested txn with its own comparisons). Every op of a txn commits
 * at the txn's revision; its index in the txn, its **slot**, tells apart the
 * grants of one txn, so a fencing token is {@linkcode tokenFor} both (the
 * requests that the txn's deletes let in take the slots left:
 * `grant_slots.ts`).
 *
 * The comparisons of a nested txn see the store as it was before the whole
 * txn, not the writes of the ops before it. So a txn carries at most one
 * write that may add to a lock's queue (two acquires of one lock would both
 * find it free), and each key at most once (etcd refuses a put and a delete
 * of one key in one txn). A write that would break either rule, or that
 * touches a key or queue of a txn still under way, waits for a later txn:
 * writes of one key, and acquires of one lock, commit in the order they were
 * asked.
 *
 * etcd 3.4 does not count puts nested in a txn against its space quota, so a
 * full quota would let acquires and marks through while it refuses every
 * other put. A txn that puts also puts the node's own key again, at its top
 * level: on a full quota etcd refuses it whole, as it refuses a plain put.
 *
 * @module
 */

import type { EtcdClient } from "./etcd.ts";
import { EtcdError } from "./etcd_errors.ts";
import type { PutRequest, TxnOp, TxnOpResponse } from "./etcd_codec.ts";

/**
 * How many writes one txn carries at most. etcd (`--max-txn-ops`, 128 by
 * default) counts a nested txn's widest branch against what its outer txn
 * leaves: 123 writes and the node's own key leave 4, the most an acquire
 * takes (its guard, then up to 3 comparisons).
 */
export const MAX_BATCH_OPS = 123;
/** The slots of one revision in a fencing token. */
export const TOKEN_SLOTS = 128;
/**
 * The size of one txn's keys and values, in bytes, past which no more ops
 * join it: well under etcd's `--max-request-bytes` (1.5 MiB by default).
 */
const MAX_BATCH_BYTES = 512 * 1024;
/** gRPC's status of a request etcd finds invalid. */
const INVALID_ARGUMENT = 3;
/** How many txns of one node may be under way at once. */
const MAX_IN_FLIGHT = 4;

/**
 * The fencing token of a grant: its txn's revision and its slot there, plus
 * the token base. Strictly increasing in commit order over every grant,
 * unique across locks; exact while `revision` stays below 2^53 / 128.
 *
 * @param revision The revision of the txn that granted.
 * @param slot The grant's index in that txn.
 * @param base The token base.
 * @returns The token.
 */
export function tokenFor(revision: number, slot: number, base: number): number {
  return revision * TOKEN_SLOTS + slot + base;
}

/** One write, as one op of a txn. */
export interface BatchWrite {
  /** The keys it writes or reads: each appears once per txn. */
  keys: readonly string[];
  /**
   * The lock whose queue it may add a key to (an acquire): one such write
   * per lock and txn.
   */
  queues?: string | undefined;
  /** Its keys' and values' size in bytes, about. */
  bytes: number;
  /** Whether it may put a value. */
  puts?: boolean | undefined;
  /**
   * Its op.
   *
   * @param slot Its index in the txn.
   * @returns The op.
   */
  op(slot: number): TxnOp;
}

/** What became of one write. */
export interface BatchAnswer {
  /** The txn's revision. */
  revision: number;
  /** The write's index in its txn. */
  slot: number;
  /** Its op's answer. */
  response: TxnOpResponse;
}

/** Writes that commit together, in one txn. */
interface Pending {
  writes: readonly BatchWrite[];
  names: string[];
  bytes: number;
  resolve: (answers: BatchAnswer[]) => void;
  reject: (error: unknown) => void;
}

/**
 * Sends a node's writes to etcd in as few txns as their order allows.
 *
 * @example Two writes, one txn
 * ```ts ignore
 * const batch = new GroupCommit(etcd, { key: "/nodes/1", value: "{}" });
 * const [a, b] = await Promise.all([
 *   batch.submit({ keys: ["/a"], bytes: 4, op: () => ({ deleteRange: { key: "/a" } }) }),
 *   batch.submit({ keys: ["/b"], bytes: 4, op: () => ({ deleteRange: { key: "/b" } }) }),
 * ]);
 * ```
 */
export class GroupCommit {
  /** The node's own key, put again with every txn that puts. */
  readonly own: PutRequest;
  readonly #etcd: EtcdClient;
  #queue: Pending[] = [];
  #inFlight = 0;
  #scheduled = false;
  /** The keys and queues of the txns under way, with how many hold each. */
  readonly #busy = new Map<string, number>();

  /**
   * @param etcd The etcd client.
   * @param own The node's own key, put again with every txn that puts.
   */
  constructor(etcd: EtcdClient, own: PutRequest) {
    this.#etcd = etcd;
    this.own = own;
  }

  /**
   * Queues a write for the next txn it may join.
   *
   * @param write The write.
   * @returns Its answer, once its txn has committed.
   * @throws {EtcdError} What etcd answered; a txn etcd refused for one of
   *   its writes is sent again write by write, so each gets its own answer.
   */
  async submit(write: BatchWrite): Promise<BatchAnswer> {
    return (await this.submitAll([write]))[0]!;
  }

  /**
   * Queues writes that must commit together, in one txn and in this order
   * (at most {@linkcode MAX_BATCH_OPS}).
   *
   * @param writes The writes.
   * @returns Their answers, in order, once their txn has committed.
   * @throws {EtcdError} What etcd answered.
   */
  submitAll(writes: readonly BatchWrite[]): Promise<BatchAnswer[]> {
    const { promise, resolve, reject } = Promise.withResolvers<
      BatchAnswer[]
    >();
    const names = writes.flatMap(namesOf);
    const bytes = writes.reduce((sum, write) => sum + write.bytes, 0);
    this.#queue.push({ writes, names, bytes, resolve, reject });
    this.#schedule();
    return promise;
  }

  /** Flushes after the current task, so writes asked together go together. */
  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= MAX_IN_FLIGHT) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      while (this.#inFlight < MAX_IN_FLIGHT && this.#queue.length > 0) {
        const batch = this.#take();
        if (batch.length === 0) return;
        void this.#send(batch);
      }
    });
  }

  /** The next txn's writes, in order; the rest stay queued, in order. */
  #take(): Pending[] {
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    const claimed = new Set<string>();
    const deferred = new Set<string>();
    let ops = 0;
    let bytes = 0;
    for (const pending of this.#queue) {
      const fits = ops + pending.writes.length <= MAX_BATCH_OPS &&
        (ops === 0 || bytes + pending.bytes <= MAX_BATCH_BYTES) &&
        pending.names.every((n) =>
          !claimed.has(n) && !deferred.has(n) && !this.#busy.has(n)
        );
      const into = fits ? claimed : deferred;
      for (const n of pending.names) into.add(n);
      if (fits) {
        batch.push(pending);
        ops += pending.writes.length;
        bytes += pending.bytes;
      } else rest.push(pending);
    }
    this.#queue = rest;
    return batch;
  }

  async #send(batch: Pending[]): Promise<void> {
    this.#inFlight++;
    const names = batch.flatMap((p) => p.names);
    for (const n of names) this.#busy.set(n, (this.#busy.get(n) ?? 0) + 1);
    try {
      const writes = batch.flatMap((p) => p.writes);
      const ops = writes.map((write, slot) => write.op(slot));
      if (writes.some((write) => write.puts)) ops.push({ put: this.own });
      const { revision, responses } = await this.#etcd.txn([], ops);
      let first = 0;
      for (const p of batch) {
        p.resolve(p.writes.map((_, i) => ({
          revision,
          slot: first + i,
          response: responses[first + i] ?? {},
        })));
        first += p.writes.length;
      }
    } catch (error) {
      if (batch.length > 1 && refusedForOne(error)) {
        await Promise.all(batch.map((p) => this.#send([p])));
      } else for (const p of batch) p.reject(error);
    } finally {
      for (const n of names) {
        const left = this.#busy.get(n)! - 1;
        if (left === 0) this.#busy.delete(n);
        else this.#busy.set(n, left);
      }
      this.#inFlight--;
      this.#schedule();
    }
  }
}

/** A write's keys, and its queue under a name no key can have. */
function namesOf(write: BatchWrite): string[] {
  return write.queues === undefined
    ? [...write.keys]
    : [...write.keys, `\0queue\0${write.queues}`];
}

/**
 * Whether etcd refused a txn as invalid (gRPC's INVALID_ARGUMENT: too large,
 * a bad key), which one of its writes may cause alone; not for the state of
 * the store or of the cluster (no space, no leader, no lease), which every
 * write would meet alone as well.
 */
function refusedForOne(error: unknown): boolean {
  return error instanceof EtcdError && error.code === INVALID_ARGUMENT;
}
