/**
 * The cluster's lock space on etcd: every lock request is a key under its
 * lock's prefix, attached to this node's lease; the queue is the create
 * revision order; who holds follows from the store by the grant rule of
 * `lock_mirror.ts`, which one node-wide watch keeps mirrored. A request is
 * granted at once by the txn that queues it when nothing conflicts; otherwise
 * the node sees, in its mirror, the moment it holds, records the grant with a
 * txn on the key (the "mark"), and only then tells the caller. Fencing tokens
 * are the revision of the txn that granted (strictly increasing over the whole
 * cluster, as revisions never go back) plus a token base kept in etcd.
 *
 * Release, withdrawal and disconnect delete keys at once; a dead node's keys
 * go when its lease expires; this node's lease lost ends every request here.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import { delay } from "../message/io.ts";
import { type EtcdClient, EtcdError } from "./etcd.ts";
import { EtcdCompactedError, watch } from "./etcd_watch.ts";
import type { KeyValue, TxnOp } from "./etcd_codec.ts";
import {
  LockMirror,
  lockPrefix,
  type MirroredRequest,
  requestKey,
  type RequestValue,
} from "./lock_mirror.ts";
import type { NodeLease } from "./node_lease.ts";

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
}

/** What {@linkcode EtcdLockSpace.acquire} asks. */
export interface AcquireOptions {
  /**
   * The mode.
   *
   * @default {"exclusive"}
   */
  mode?: LockMode | undefined;
  /**
   * Whether to queue when the lock is taken; otherwise the answer is
   * `"busy"`.
   *
   * @default {true}
   */
  wait?: boolean | undefined;
  /** Who asks, for status. */
  peer?: string | undefined;
  /** The client's label, for status. */
  label?: string | undefined;
}

/** The answer of {@linkcode EtcdLockSpace.acquire}. */
export type AcquireResult =
  | { status: "granted"; request: ClusterRequest }
  | { status: "queued"; request: ClusterRequest }
  | { status: "busy" };

type State = "pending" | "waiting" | "marking" | "held" | "ended";

/** One request of this node, from acquire to its end. */
export class ClusterRequest {
  /** The fencing token, once held; 0 before. */
  token = 0;
  /** The revision that queued it (its place in line); 0 before it is known. */
  createRevision = 0;
  /** @internal */
  state: State = "pending";
  /** @internal Settles once the acquire txn has answered. */
  queued: Promise<unknown> = Promise.resolve();

  /**
   * @param key Its etcd key.
   * @param name The lock's name.
   * @param mode Its mode.
   * @param conn Its connection.
   */
  constructor(
    readonly key: string,
    readonly name: string,
    readonly mode: LockMode,
    readonly conn: number,
  ) {}

  /** Whether it holds the lock. */
  get held(): boolean {
    return this.state === "held";
  }
}

/** etcd's default `--max-txn-ops`. */
const MAX_TXN_OPS = 128;
/** Keys read per page when listing. */
const PAGE = 1_000;
/** The pause before retrying a write etcd did not take. */
const RETRY_AFTER_MS = 100;

/**
 * The lock space of one node, shared with every other node on the same etcd
 * prefix.
 *
 * @example Taking a lock that another node may hold
 * ```ts ignore
 * await using space = await EtcdLockSpace.open(etcd, lease, {
 *   onGrant: (request) => reply(request.conn, request.token),
 *   onLost: (request) => closeConnection(request.conn),
 * });
 * const result = await space.acquire(7, "jobs");
 * ```
 */
export class EtcdLockSpace implements AsyncDisposable {
  /** Every request of the cluster, as of the watch's revision. */
  readonly mirror: LockMirror;
  /** Added to every revision to make a fencing token. */
  readonly tokenBase: number;
  readonly #etcd: EtcdClient;
  readonly #lease: NodeLease;
  readonly #node: string;
  readonly #root: string;
  readonly #options: LockSpaceOptions;
  readonly #own = new Map<string, ClusterRequest>();
  readonly #byName = new Map<string, Set<ClusterRequest>>();
  readonly #closed = new AbortController();
  #following: Promise<void> = Promise.resolve();
  #seq = 0;

  private constructor(
    etcd: EtcdClient,
    lease: NodeLease,
    tokenBase: number,
    options: LockSpaceOptions,
  ) {
    this.#etcd = etcd;
    this.#lease = lease;
    this.#node = BigInt(lease.id).toString(16);
    this.#root = options.prefix ?? "/pklock/v1";
    this.#options = options;
    this.tokenBase = tokenBase;
    this.mirror = new LockMirror(this.#root);
  }

  /**
   * Registers this node, lists the lock space and starts following it.
   *
   * @param etcd The etcd client.
   * @param lease This node's lease; its loss ends every request here.
   * @param options The prefix and the event sinks.
   * @returns The lock space.
   * @throws {EtcdError} When etcd cannot be read.
   */
  static async open(
    etcd: EtcdClient,
    lease: NodeLease,
    options: LockSpaceOptions,
  ): Promise<EtcdLockSpace> {
    const root = options.prefix ?? "/pklock/v1";
    const base = await etcd.range({ key: `${root}/meta/tokenBase` });
    const tokenBase = Number(base.kvs[0]?.value ?? 0) || 0;
    const space = new EtcdLockSpace(etcd, lease, tokenBase, options);
    await etcd.put({
      key: `${root}/nodes/${space.#node}`,
      value: JSON.stringify({ since: Date.now() }),
      lease: lease.id,
    });
    await space.#list();
    lease.lost.addEventListener("abort", () => space.#leaseLost(), {
      once: true,
    });
    space.#following = space.#follow();
    return space;
  }

  /**
   * Asks for a lock: granted at once when nothing conflicts, else queued
   * (granted later through `onGrant`), or `"busy"` when `wait` is false.
   *
   * @param conn The asking connection.
   * @param name The lock's name.
   * @param options The mode, whether to wait, status details.
   * @returns What became of the request.
   * @throws {EtcdError} When etcd does not take the request; nothing is queued.
   * @throws {NodeLeaseLostError} When this node's lease is lost.
   */
  async acquire(
    conn: number,
    name: string,
    options: AcquireOptions = {},
  ): Promise<AcquireResult> {
    this.#lease.lost.throwIfAborted();
    const mode = options.mode ?? "exclusive";
    const wait = options.wait ?? true;
    const seq = ++this.#seq;
    const key = requestKey(this.#root, {
      name,
      mode,
      node: this.#node,
      conn,
      seq,
    });
    const request = new ClusterRequest(key, name, mode, conn);
    this.#own.set(key, request);
    const ofName = this.#byName.get(name);
    if (ofName) ofName.add(request);
    else this.#byName.set(name, new Set([request]));
    const value: RequestValue = {
      since: Date.now(),
      peer: options.peer,
      label: options.label,
    };
    const conflict = lockPrefix(
      this.#root,
      name,
      mode === "shared" ? "exclusive" : undefined,
    );
    const put = (granted: boolean): TxnOp => ({
      put: {
        key,
        value: JSON.stringify({ ...value, granted }),
        lease: this.#lease.id,
      },
    });
    // A retried txn whose first try committed finds its own key: the failure
    // branch reads it, so its real place in line is known.
    const asked = this.#etcd.txn(
      [{
        key: conflict,
        prefix: true,
        target: "create",
        result: "==",
        value: 0,
      }],
      [put(true)],
      wait ? [put(false), { range: { key } }] : [{ range: { key } }],
    );
    request.queued = asked.catch(() => {});
    let answer;
    try {
      answer = await asked;
    } catch (error) {
      this.#end(request);
      throw error;
    }
    if (this.#lease.lost.aborted) {
      this.#end(request);
      throw this.#lease.lost.reason;
    }
    if (request.state === "ended") {
      // Released while being queued, or its key deleted by someone else.
      await this.#deleteKeys([key]);
      return { status: "busy" };
    }
    if (answer.succeeded) {
      request.createRevision = answer.revision;
      request.token = answer.revision + this.tokenBase;
      request.state = "held";
      return { status: "granted", request };
    }
    const mine = answer.responses.at(-1)?.range?.kvs[0];
    if (!wait) {
      this.#end(request);
      if (mine) await this.#deleteKeys([key]);
      return { status: "busy" };
    }
    request.createRevision = mine?.createRevision ?? answer.revision;
    request.state = "waiting";
    this.#consider(request);
    return { status: "queued", request };
  }

  /**
   * Releases a hold or withdraws a queued request, deleting its key. A
   * request being granted at that moment is withdrawn: `onGrant` will not be
   * called for it.
   *
   * @param request The request.
   * @returns Whether it was held.
   */
  async release(request: ClusterRequest): Promise<boolean> {
    if (request.state === "ended") return false;
    const held = request.state === "held";
    this.#end(request);
    await request.queued;
    await this.#deleteKeys([request.key]);
    return held;
  }

  /**
   * Ends every request of a connection at once (it closed): their keys are
   * deleted in txns of at most 128 deletes, sent together.
   *
   * @param conn The connection.
   */
  async disconnect(conn: number): Promise<void> {
    const requests = [...this.#own.values()].filter((r) => r.conn === conn);
    for (const request of requests) this.#end(request);
    await Promise.all(requests.map((r) => r.queued));
    await this.#deleteKeys(requests.map((r) => r.key));
  }

  /**
   * The fencing token of a request the mirror shows granted.
   *
   * @param request A request of the mirror.
   * @returns Its token, or 0 when it is not (yet) marked granted.
   */
  tokenOf(request: MirroredRequest): number {
    return request.value.granted ? request.modRevision + this.tokenBase : 0;
  }

  /** Stops following etcd; the requests' keys stay until the lease goes. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closed.abort();
    await this.#following;
  }

  async #list(): Promise<void> {
    const prefix = `${this.#root}/q/`;
    const kvs: KeyValue[] = [];
    let revision = 0;
    let from = prefix;
    while (true) {
      const page = await this.#etcd.range({
        key: from,
        end: `${this.#root}/q0`, // the end of the prefix: "0" follows "/"
        limit: PAGE,
        revision: revision || undefined,
      });
      revision ||= page.revision;
      kvs.push(...page.kvs);
      if (!page.more || page.kvs.length === 0) break;
      from = `${page.kvs.at(-1)!.key}\0`;
    }
    this.mirror.reset(kvs, revision);
    for (const request of [...this.#own.values()]) {
      if (request.state === "pending") continue;
      if (!this.mirror.get(request.key)) {
        this.#lost(request, "Its key was deleted");
      } else this.#consider(request);
    }
  }

  async #follow(): Promise<void> {
    const signal = AbortSignal.any([this.#closed.signal, this.#lease.lost]);
    while (!signal.aborted) {
      const batches = watch(this.#etcd, {
        key: `${this.#root}/q/`,
        prefix: true,
      }, {
        startRevision: this.mirror.revision + 1,
        progressTimeoutMs: this.#options.progressTimeoutMs,
        signal,
      });
      try {
        for await (const batch of batches) {
          this.#apply(batch.events, batch.revision);
        }
      } catch (error) {
        if (!(error instanceof EtcdCompactedError)) throw error;
        await this.#relist(signal);
      }
    }
  }

  async #relist(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        return await this.#list();
      } catch (error) {
        if (!(error instanceof EtcdError)) throw error;
        await delay(RETRY_AFTER_MS, signal);
      }
    }
  }

  #apply(
    events: { type: "put" | "delete"; kv: KeyValue }[],
    revision: number,
  ): void {
    const deleted: MirroredRequest[] = [];
    const touched = this.mirror.apply(events, revision, deleted);
    for (const gone of deleted) {
      const request = this.#own.get(gone.key);
      if (request?.state === "pending") this.#end(request);
      else if (request) {
        this.#lost(request, "Its key was deleted by another party");
      }
    }
    for (const name of touched) {
      for (const request of this.#byName.get(name) ?? []) {
        this.#consider(request);
      }
    }
  }

  /** Marks a waiting request granted once the mirror shows it holding. */
  #consider(request: ClusterRequest): void {
    if (request.state !== "waiting" || !this.mirror.holds(request.key)) return;
    request.state = "marking";
    this.#mark(request);
  }

  async #mark(request: ClusterRequest): Promise<void> {
    const known = this.mirror.get(request.key)!;
    const value = JSON.stringify({ ...known.value, granted: true });
    while (request.state === "marking" && !this.#lease.lost.aborted) {
      try {
        const answer = await this.#etcd.txn(
          [{
            key: request.key,
            target: "create",
            result: "==",
            value: request.createRevision,
          }],
          [{ put: { key: request.key, value, lease: this.#lease.id } }],
        );
        if (request.state !== "marking" || this.#lease.lost.aborted) return;
        if (!answer.succeeded) {
          this.#lost(request, "Its key was deleted by another party");
          return;
        }
        request.token = answer.revision + this.tokenBase;
        request.state = "held";
        this.#options.onGrant(request);
        return;
      } catch (error) {
        if (!(error instanceof EtcdError)) throw error;
        await delay(RETRY_AFTER_MS, this.#lease.lost);
      }
    }
  }

  /**
   * Deletes keys until etcd has taken every delete, or the lease is lost (its
   * keys then go with it).
   */
  async #deleteKeys(keys: string[]): Promise<void> {
    const batches: TxnOp[][] = [];
    for (let i = 0; i < keys.length; i += MAX_TXN_OPS) {
      batches.push(
        keys.slice(i, i + MAX_TXN_OPS).map((key) => ({ deleteRange: { key } })),
      );
    }
    await Promise.all(batches.map(async (ops) => {
      while (!this.#lease.lost.aborted) {
        try {
          return await this.#etcd.txn([], ops);
        } catch (error) {
          if (!(error instanceof EtcdError)) throw error;
          await delay(RETRY_AFTER_MS, this.#lease.lost);
        }
      }
    }));
  }

  #end(request: ClusterRequest): void {
    request.state = "ended";
    this.#own.delete(request.key);
    const ofName = this.#byName.get(request.name);
    ofName?.delete(request);
    if (ofName?.size === 0) this.#byName.delete(request.name);
  }

  #lost(request: ClusterRequest, reason: string): void {
    if (request.state === "ended") return;
    this.#end(request);
    this.#options.onLost(request, reason);
  }

  /** Ends every request; those still being queued throw from `acquire`. */
  #leaseLost(): void {
    const reason = (this.#lease.lost.reason as Error).message;
    for (const request of [...this.#own.values()]) {
      if (request.state !== "pending") this.#lost(request, reason);
    }
  }
}
