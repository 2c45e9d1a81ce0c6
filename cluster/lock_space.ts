/**
 * The cluster's lock space on etcd: every lock request is a key under its
 * lock's prefix on this node's lease, queued in create revision order
 * (`request_keys.ts`); who holds follows from the store by the grant rule of
 * `lock_mirror.ts`, mirrored by one watch. A request is granted at once by
 * the txn that queues it when nothing conflicts, else at the revision of the
 * deletes that leave it holding, with no write of its own
 * (`grant_slots.ts`), or, when that revision has no slot left for it or came
 * before the mirror's listing, by its mark, a write its node makes. Writes
 * are group-committed (`group_commit.ts`); tokens are the granting revision
 * and the grant's slot in it, plus a token base kept in etcd.
 * Release, withdrawal and disconnect delete keys at once; a dead node's keys
 * go with its lease; this node's lease lost ends every request here.
 *
 * @module
 */

import {
  type AcquireOptions,
  type AcquireResult,
  ClusterRequest,
  OwnRequests,
} from "./own_requests.ts";
import type { EtcdClient } from "./etcd.ts";
import { untilTaken } from "./etcd_retry.ts";
import { queueRequest } from "./acquire_txn.ts";
import { GroupCommit, tokenFor } from "./group_commit.ts";
import { GrantRecords } from "./grant_records.ts";
import { refusalToQueue, refusalWhileWaiting } from "./mirror_refusals.ts";
import { LinkedAbort } from "./linked_abort.ts";
import { MirrorFeed } from "./mirror_feed.ts";
import type { LockMirror, MirroredRequest } from "./lock_mirror.ts";
import { ownerOf } from "./request_keys.ts";
import { NodeKeys } from "./node_keys.ts";
import { markWrite } from "./request_writes.ts";
import type { NodeLease } from "./node_lease.ts";
import type { LockSpaceOptions } from "./lock_space_options.ts";

/** Why a request ends whose key someone else deleted. */
const DELETED = "Its key was deleted by another party";

/**
 * The lock space of one node, shared with every other node on the same etcd
 * prefix.
 *
 * @example Taking a lock that another node may hold
 * ```ts ignore
 * await using space = await EtcdLockSpace.open(etcd, lease, {
 *   onGrant: (request) => reply(request.conn, request.token),
 *   onLost: (request) => closeConnection(request.conn),
 *   onRefused: (request, reason) => refuse(request.conn, reason),
 * });
 * const result = await space.acquire(7, "jobs");
 * ```
 */
export class EtcdLockSpace implements AsyncDisposable {
  /** Added to every fencing token ({@linkcode tokenFor}). */
  readonly tokenBase: number;
  readonly #batch: GroupCommit;
  readonly #lease: NodeLease;
  readonly #node: string;
  readonly #root: string;
  readonly #options: LockSpaceOptions;
  readonly #own = new OwnRequests();
  readonly #closed = new AbortController();
  /** Ends the background writes: the node stops, or its lease is gone. */
  readonly #stop: AbortSignal;
  readonly #tasks = new Set<Promise<void>>();
  readonly #keys: NodeKeys;
  readonly #records: GrantRecords;
  #feed: MirrorFeed | null = null;
  /** Requests asked on this node so far: each one's number. */
  #asked = 0;
  /**
   * Whether a request of the mirror is one this node has ended (its delete
   * on the way): left out of wait-for graphs and `status`.
   *
   * @param request A request of the mirror.
   * @returns Whether it has ended here.
   */
  readonly ended = (request: MirroredRequest): boolean =>
    request.node === this.#node && this.#own.get(request.key) === undefined;

  private constructor(
    etcd: EtcdClient,
    lease: NodeLease,
    tokenBase: number,
    options: LockSpaceOptions,
  ) {
    this.#lease = lease;
    this.#node = BigInt(lease.id).toString(16);
    this.#root = options.prefix ?? "/pklock/v1";
    this.#batch = new GroupCommit(etcd, {
      key: `${this.#root}/nodes/${this.#node}`,
      value: JSON.stringify({ since: Date.now() }),
      lease: lease.id,
    });
    this.#options = options;
    this.tokenBase = tokenBase;
    this.#stop = new LinkedAbort(this.#closed.signal, lease.lost).signal;
    this.#keys = new NodeKeys(this.#root, this.#node, {
      etcd,
      batch: this.#batch,
      signal: this.#stop,
      mirror: () => this.mirror,
      track: (task) => this.#track(task),
    });
    this.#records = new GrantRecords({
      batch: this.#batch,
      lease: lease.id,
      signal: this.#stop,
      valueOf: (key) => this.mirror.get(key)?.value,
      holds: (key, createRevision) => {
        const request = this.#own.get(key);
        return request?.state === "held" &&
          request.createRevision === createRevision;
      },
      track: (task) => void this.#track(task),
    });
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
    await etcd.put(space.#batch.own);
    space.#feed = await MirrorFeed.open(etcd, {
      root,
      progressTimeoutMs: options.progressTimeoutMs,
      signal: space.#stop,
      onChange: (touched, deleted) => space.#changed(touched, deleted),
      onReset: () => space.#reset(),
    });
    lease.lost.addEventListener("abort", () => space.#leaseLost(), {
      once: true,
    });
    return space;
  }

  /** This node's lease, whose loss ends every request here. */
  get lease(): NodeLease {
    return this.#lease;
  }

  /** This node's id in keys and status: its lease id in hex. */
  get node(): string {
    return this.#node;
  }

  /** Every request of the cluster, as of the watch's revision. */
  get mirror(): LockMirror {
    return this.#feed!.mirror;
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
    const again = this.#own.again(conn, name);
    if (again) return { status: "refused", reason: again };
    const owner = ownerOf(this.#node, conn);
    const mirror = this.mirror;
    const limit = mode === "shared" ? options.limit ?? Infinity : Infinity;
    const asked = { owner, name, mode, limit, wait };
    const refusal = refusalToQueue(mirror, asked, this.ended);
    if (refusal !== null) return { status: "refused", reason: refusal };
    const limited = limit === Infinity ? undefined : true;
    const key = this.#keys.take({ name, mode, limited });
    const request = new ClusterRequest(key, name, mode, conn, ++this.#asked);
    this.#own.add(request);
    const queued = queueRequest((write) => this.#batch.submit(write), request, {
      root: this.#root,
      lease: this.#lease.id,
      wait,
      known: { revision: mirror.revision, requests: mirror.queue(name) },
      limit,
      peer: options.peer,
      label: options.label,
    });
    request.queued = queued.catch(() => {});
    let answer;
    try {
      answer = await queued;
    } catch (error) {
      // The txn may have committed before the answer was lost, or commit
      // later still (a member that had it resumes): deleted when seen.
      this.#own.end(request);
      this.#keys.abandon(key);
      throw error;
    }
    this.#feed!.seen(answer.revision);
    if (this.#lease.lost.aborted) {
      this.#own.end(request);
      throw this.#lease.lost.reason;
    }
    if (answer.occupied) {
      // An older request's late write holds the key: it goes, and is never
      // taken again; this request asks again under another key.
      this.#own.end(request);
      this.#keys.abandon(key);
      return await this.acquire(conn, name, options);
    }
    if (request.state === "ended") {
      // Released while being queued, or its key deleted by someone else.
      await this.#keys.discard(request, answer.revision);
      return { status: "busy" };
    }
    if (answer.grant) {
      const { revision, slot } = answer.grant;
      request.token = tokenFor(revision, slot, this.tokenBase);
      request.state = "held";
      return { status: "granted", request };
    }
    if (!wait) {
      this.#own.end(request);
      await this.#keys.discard(request, answer.revision);
      return { status: "busy" };
    }
    request.state = "waiting";
    const mirrored = this.mirror.get(key);
    const token = mirrored && this.mirror.holds(key)
      ? this.tokenOf(mirrored)
      : 0;
    if (token > 0) {
      // A release granted it before etcd's answer to its acquire came back:
      // the caller has not seen it queued, so this answer grants it, not
      // `onGrant`.
      request.token = token;
      request.state = "held";
      this.#recordLater(request, mirrored!);
      return { status: "granted", request };
    }
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
    this.#own.end(request);
    await request.queued;
    await this.#keys.delete([request]);
    return held;
  }

  /**
   * Ends every request of a connection at once (it closed): their keys are
   * deleted together, in as few txns as etcd takes.
   *
   * @param conn The connection.
   */
  async disconnect(conn: number): Promise<void> {
    const requests = this.#own.ofConn(conn);
    for (const request of requests) this.#own.end(request);
    await Promise.all(requests.map((r) => r.queued));
    await this.#keys.delete(requests);
  }

  /**
   * Waits until the mirror shows every change up to `revision`.
   *
   * @param revision A revision, as of a request's `createRevision`.
   * @returns Once the mirror is at or past it.
   */
  caughtUp(revision: number): Promise<void> {
    return this.#feed!.caughtUp(revision);
  }

  /**
   * The fencing token of a request the mirror shows granted.
   *
   * @param request A request of the mirror.
   * @returns Its token; 0 when it is not granted (yet), or was granted
   *   before the mirror's listing with no write of its own.
   */
  tokenOf(request: MirroredRequest): number {
    const grant = request.grant;
    if (!grant?.revision) return 0;
    return tokenFor(grant.revision, grant.slot, this.tokenBase);
  }

  /** Stops following etcd; the requests' keys stay until the lease goes. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closed.abort();
    await this.#feed?.done;
    await Promise.all(this.#tasks);
  }

  /** After a re-list: requests whose keys went meanwhile are lost. */
  #reset(): void {
    this.#keys.sweep(this.mirror);
    for (const request of this.#own.all()) {
      if (request.state === "pending") continue;
      if (!this.mirror.get(request.key)) this.#lost(request, DELETED);
      else this.#consider(request);
    }
    this.#options.onQueues?.(this.mirror.names());
  }

  #changed(touched: Iterable<string>, deleted: MirroredRequest[]): void {
    this.#keys.sweep(this.mirror);
    for (const gone of deleted) {
      const request = this.#own.get(gone.key);
      if (request?.state === "pending") this.#own.end(request);
      else if (request) this.#lost(request, DELETED);
    }
    for (const name of touched) {
      for (const request of this.#own.ofName(name)) this.#consider(request);
    }
    this.#options.onQueues?.(touched);
  }

  /**
   * Grants a waiting request once the mirror shows its grant, or marks it
   * when it holds with no known token. While it waits, refuses it if the
   * lock's oldest shared request has another limit (they raced), and, the
   * first time, if its enqueue closed a cycle.
   */
  #consider(request: ClusterRequest): void {
    const mirrored = this.mirror.get(request.key);
    if (request.state !== "waiting" || !mirrored) return;
    const mirror = this.mirror;
    const holds = mirror.holds(request.key);
    // A value that says granted on a key that does not hold (an operator's
    // write) grants nothing.
    const token = holds ? this.tokenOf(mirrored) : 0;
    if (token > 0) {
      this.#grant(request, token);
      this.#recordLater(request, mirrored);
      return;
    }
    if (holds) {
      request.state = "marking";
      this.#track(this.#mark(request));
      return;
    }
    const first = !request.checked;
    request.checked = true;
    const refusal = refusalWhileWaiting(mirror, mirrored, first, this.ended);
    if (refusal === null) return;
    this.#own.end(request);
    this.#options.onRefused(request, refusal);
    this.#keys.delete([request]);
  }

  async #mark(request: ClusterRequest): Promise<void> {
    const { key, createRevision } = request;
    const { value } = this.mirror.get(key)!;
    const lease = this.#lease.id;
    const mark = markWrite({ key, createRevision, value, lease });
    using stop = new LinkedAbort(this.#stop, request.withdrawn.signal);
    const submit = () => this.#batch.submit(mark);
    const answer = await untilTaken(stop.signal, submit);
    if (!answer || request.state !== "marking" || this.#lease.lost.aborted) {
      return;
    }
    this.#feed!.seen(answer.revision);
    if (!answer.response.txn?.succeeded) return this.#lost(request, DELETED);
    this.#grant(
      request,
      tokenFor(answer.revision, answer.slot, this.tokenBase),
    );
  }

  /** Grants a request the mirror shows granted, unless the lease is lost. */
  #grant(request: ClusterRequest, token: number): void {
    if (this.#lease.lost.aborted) return;
    request.token = token;
    request.state = "held";
    this.#options.onGrant(request);
  }

  /** Records a grant that deletes made, should the hold last. */
  #recordLater(request: ClusterRequest, granted: MirroredRequest): void {
    if (granted.value.granted || request.state !== "held") return;
    this.#records.add(request, granted.grant!);
  }

  /** Keeps a background task, so that disposal waits for it. */
  #track(task: Promise<void>): Promise<void> {
    this.#tasks.add(task);
    return task.finally(() => this.#tasks.delete(task));
  }

  #lost(request: ClusterRequest, reason: string): void {
    if (request.state === "ended") return;
    this.#own.end(request);
    this.#options.onLost(request, reason);
  }

  /** Ends every request; those still being queued throw from `acquire`. */
  #leaseLost(): void {
    const reason = (this.#lease.lost.reason as Error).message;
    this.#keys.clear();
    for (const request of this.#own.all()) {
      if (request.state !== "pending") this.#lost(request, reason);
    }
  }
}
