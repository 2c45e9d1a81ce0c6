/**
 * Test helpers for the lock space on a real etcd: one lock-space instance
 * per simulated node, recording its events, and an etcd client whose txn
 * fails now and commits later, and one that counts its txns.
 *
 * @module
 */

import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import { EtcdError } from "./etcd_errors.ts";
import { EtcdLockSpace } from "./lock_space.ts";
import type { Compare, TxnOp, TxnResponse } from "./etcd_codec.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { NodeLease } from "./node_lease.ts";
import { deadline } from "../tests/helpers.ts";

/** One lock-space instance, as if on its own node, recording its events. */
export class Node implements AsyncDisposable {
  readonly grants: ClusterRequest[] = [];
  readonly losses: { request: ClusterRequest; reason: string; at: number }[] =
    [];
  readonly deadlocks: ClusterRequest[] = [];
  #changed = Promise.withResolvers<void>();

  private constructor(
    readonly etcd: EtcdClient,
    readonly lease: NodeLease,
    public space: EtcdLockSpace | null,
  ) {}

  static async start(
    endpoints: string[],
    options: {
      prefix?: string;
      ttlSeconds?: number | undefined;
      etcd?: EtcdClient;
    } = {},
  ): Promise<Node> {
    const etcd = options.etcd ?? new EtcdClient(endpoints);
    const ttlSeconds = options.ttlSeconds ?? 2;
    const lease = await NodeLease.grant(etcd, { ttlSeconds, marginMs: 500 });
    const node = new Node(etcd, lease, null);
    node.space = await EtcdLockSpace.open(etcd, lease, {
      prefix: options.prefix,
      progressTimeoutMs: 3_000,
      onGrant: (request) => node.#record(() => node.grants.push(request)),
      onRefused: (request) => node.#record(() => node.deadlocks.push(request)),
      onLost: (request, reason) =>
        node.#record(() =>
          node.losses.push({ request, reason, at: Date.now() })
        ),
    });
    return node;
  }

  get locks(): EtcdLockSpace {
    return this.space!;
  }

  /** Waits until `n` requests have been granted after queueing. */
  async granted(n: number, within = 10_000): Promise<ClusterRequest[]> {
    await deadline(
      this.#until(() => this.grants.length >= n),
      within,
      `${n} grants`,
    );
    return this.grants.slice(0, n);
  }

  /** Waits until `n` requests have been lost. */
  async lost(n: number): Promise<void> {
    await deadline(
      this.#until(() => this.losses.length >= n),
      10_000,
      `${n} losses`,
    );
  }

  async queued(
    conn: number,
    name: string,
    mode?: "shared",
  ): Promise<ClusterRequest> {
    const result = await this.locks.acquire(conn, name, { mode });
    assert.equal(result.status, "queued");
    return (result as { request: ClusterRequest }).request;
  }

  async held(
    conn: number,
    name: string,
    mode?: "shared",
  ): Promise<ClusterRequest> {
    const result = await this.locks.acquire(conn, name, { mode });
    assert.equal(result.status, "granted");
    return (result as { request: ClusterRequest }).request;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.space?.[Symbol.asyncDispose]();
    await this.lease[Symbol.asyncDispose]();
  }

  /** Waits, for at most 10 s, until `done()` holds after an event. */
  async until(what: string, done: () => boolean): Promise<void> {
    await deadline(this.#until(done), 10_000, what);
  }

  async #until(done: () => boolean): Promise<void> {
    while (!done()) await this.#changed.promise;
  }

  #record(change: () => void): void {
    change();
    this.#changed.resolve();
    this.#changed = Promise.withResolvers();
  }
}

/**
 * An etcd client whose next txn, once armed, is not sent but answered with
 * an error, as when a member stops answering, and sent for real later
 * (`commitLate`), as when the frozen member that had taken it resumes.
 */
export class LateTxnClient extends EtcdClient {
  #armed = false;
  #late: (() => Promise<TxnResponse>) | null = null;
  /** Resolves when a txn that deletes keys has committed. */
  deleted = Promise.withResolvers<void>();

  /** The next txn fails now and may commit later. */
  arm(): void {
    this.#armed = true;
  }

  /** Sends the txn that failed. */
  commitLate(): Promise<TxnResponse> {
    return this.#late!();
  }

  override async txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
    signal?: AbortSignal,
  ): Promise<TxnResponse> {
    if (this.#armed) {
      this.#armed = false;
      this.#late = () => super.txn(compare, success, failure);
      throw new EtcdError("No endpoint answered (armed by the test)", 14);
    }
    const answer = await super.txn(compare, success, failure, signal);
    if (success.some((op) => "deleteRange" in op)) this.deleted.resolve();
    return answer;
  }
}

/**
 * An etcd client that records how many ops each txn it sends carries, and
 * calls `onTxn` just before.
 */
export class CountingClient extends EtcdClient {
  readonly txns: number[] = [];
  onTxn: () => void = () => {};

  override txn(
    compare: Compare[],
    success: TxnOp[],
    failure?: TxnOp[],
    signal?: AbortSignal,
  ): Promise<TxnResponse> {
    this.onTxn();
    this.txns.push(success.length);
    return super.txn(compare, success, failure, signal);
  }
}
