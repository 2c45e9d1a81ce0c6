/**
 * The etcd lock space behind the lock server's {@linkcode LockSpace} seam, so
 * that every command, session, journal entry and notice works unchanged on a
 * cluster node. Outcomes arrive when etcd answers: an acquire's txn, or the
 * mirror showing a waiting request granted.
 *
 * The node's lease is this node's promise: when it is lost, every connection
 * with a request here is told (`lock_lost`, to clients that sent `hello`) and
 * closed by the node's deadline, before the lease can expire on etcd; the
 * node grants nothing until a new lease and a fresh listing are in place.
 *
 * @module
 */

import type { Timing } from "../server/journal.ts";
import type {
  ClusterView,
  LockRequest,
  LockSpaceEvents,
  LockState,
  LockView,
  RequestOwner,
  SharedLockSpace,
  SpaceLockState,
  WithdrawCause,
} from "../server/lock_space.ts";
import type { Ticket } from "../server/outcomes.ts";
import type { Session } from "../server/session.ts";
import type { EtcdClient } from "./etcd.ts";
import { deleteKeys } from "./etcd_retry.ts";
import type { EtcdLockSpace } from "./lock_space.ts";
import { NodeLeaseLostError } from "./node_lease.ts";
import type { AcquireResult, ClusterRequest } from "./own_requests.ts";
import { followNodes, readNodes } from "./live_nodes.ts";
import { NodeRequest, NodeRequests, wholeState } from "./node_requests.ts";
import { closeLost, failAcquire, nodeState } from "./node_queues.ts";
import {
  type ClusterLockSpaceOptions,
  openNodeSpace,
  reopenNodeSpace,
  type SpaceReports,
} from "./node_space.ts";

const NO_LEASE = "this node has no etcd lease at the moment";

/**
 * One node's lock space in a cluster on etcd, as the lock server's seam.
 *
 * @example Serving a cluster node
 * ```ts ignore
 * await using cluster = await ClusterLockSpace.open(etcd, { ttlSeconds: 10 });
 * await using server = new LockServer({ lockSpace: (e) => cluster.bind(e) });
 * ```
 */
export class ClusterLockSpace
  implements SharedLockSpace<Ticket, Timing>, AsyncDisposable {
  /** Every node's locks, from this node's mirror. */
  readonly whole: LockView<Timing>;
  readonly #etcd: EtcdClient;
  readonly #options: ClusterLockSpaceOptions;
  readonly #root: string;
  readonly #closed = new AbortController();
  readonly #tasks = new Set<Promise<unknown>>();
  readonly #mine = new NodeRequests();
  #events: LockSpaceEvents<Ticket> | null = null;
  #space: EtcdLockSpace | null;
  #node: string;
  #nodes: string[] = [];
  #flush: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    etcd: EtcdClient,
    space: EtcdLockSpace,
    options: ClusterLockSpaceOptions,
  ) {
    this.#etcd = etcd;
    this.#options = options;
    this.#root = options.prefix ?? "/pklock/v1";
    this.#space = space;
    this.#node = space.node;
    this.whole = {
      names: () => this.#space?.mirror.names() ?? [],
      inspect: (name) => this.#inspectWhole(name),
    };
  }

  /**
   * Takes a node lease, registers the node and lists the lock space.
   *
   * @param etcd The etcd client.
   * @param options The lease's TTL and margin, the key prefix.
   * @returns The lock space, to {@linkcode ClusterLockSpace.bind} to a server.
   * @throws {EtcdError} When etcd does not answer.
   */
  static async open(
    etcd: EtcdClient,
    options: ClusterLockSpaceOptions = {},
  ): Promise<ClusterLockSpace> {
    // The space reports outcomes only for requests it was given, so never
    // before `made` is set; a watch batch may come before, with none here.
    const made: { self?: ClusterLockSpace } = {};
    const space = await openNodeSpace(
      etcd,
      options,
      ClusterLockSpace.#reports(() => made.self),
    );
    const self = made.self = new ClusterLockSpace(etcd, space, options);
    self.#watchLease(space);
    self.#nodes = await readNodes(etcd, self.#root);
    self.#track(
      followNodes(etcd, self.#root, self.#closed.signal, (nodes) => {
        self.#nodes = nodes;
      }),
    );
    return self;
  }

  /**
   * Reports outcomes to the lock server's sink; called once, by its factory.
   *
   * @param events The sink.
   * @returns This space.
   */
  bind(events: LockSpaceEvents<Ticket>): this {
    this.#events = events;
    return this;
  }

  acquire(session: Session, ticket: Ticket): void {
    const events = this.#events!;
    const existing = this.#mine.find(session, ticket.name);
    if (existing) {
      const held = existing.state === "held";
      events.refused(
        session,
        ticket,
        held ? "already_held" : "already_waiting",
      );
      return;
    }
    const space = this.#space;
    if (space === null) {
      failAcquire(session, ticket, new NodeLeaseLostError(NO_LEASE));
      return;
    }
    const request = new NodeRequest(session, ticket);
    this.#mine.add(request);
    this.#track(this.#ask(space, request));
  }

  release(session: Session, name: string): boolean {
    const request = this.#mine.find(session, name);
    if (request === undefined) return false;
    const was = request.state;
    this.#mine.end(request);
    if (was === "pending") {
      request.cancelled = true;
      return true;
    }
    this.#releaseKey(request);
    if (was === "held") this.#events!.released(request, "client");
    else this.#events!.withdrawn(request, "cancelled");
    this.#events!.changed(name);
    return true;
  }

  withdraw(request: LockRequest<Session, Ticket>, cause: WithdrawCause): void {
    const mine = this.#mine.find(request.owner, request.name);
    if (mine !== request || mine.state !== "waiting") return;
    this.#mine.end(mine);
    this.#releaseKey(mine);
    this.#events!.withdrawn(mine, cause);
    this.#events!.changed(mine.name);
  }

  releaseAll(session: Session, cause: "disconnect" | "force"): void {
    const requests = this.#mine.of(session);
    if (requests.length === 0) return;
    for (const request of requests) {
      const was = request.state;
      this.#mine.end(request);
      if (was === "held") this.#events!.released(request, cause);
      else if (was === "waiting") {
        this.#events!.withdrawn(request, "disconnect");
      }
    }
    const space = this.#space;
    if (space !== null) this.#track(space.disconnect(session.id));
    for (const request of requests) this.#events!.changed(request.name);
  }

  /** Tokens are etcd revisions and never run out: no grant waits for one. */
  resumeGrants(): void {}

  countOf(session: Session): number {
    return this.#mine.countOf(session);
  }

  inspect(name: string): SpaceLockState<Session, Ticket> | null {
    const space = this.#space;
    return space
      ? nodeState(space, this.#mine, name)
      : this.#mine.inspect(name);
  }

  /** This node's: metrics are a process's, and sum over the nodes. */
  count(name: string): { holders: number; waiters: number } | null {
    const state = this.#mine.inspect(name);
    return state && {
      holders: state.holders.length,
      waiters: state.waiters.length,
    };
  }

  names(): Iterable<string> {
    return this.#mine.names();
  }

  cluster(): ClusterView {
    return { node: this.#node, nodes: this.#nodes };
  }

  forceRemote(name: string): LockRequest<RequestOwner, Timing>[] {
    const space = this.#space;
    const state = this.#inspectWhole(name);
    if (space === null || state === null) return [];
    const remote = state.holders.filter((r) => r.owner.node !== this.#node);
    const keys = space.mirror.holders(name)
      .filter((m) => m.node !== this.#node)
      .map(({ key, createRevision }) => ({ key, createRevision }));
    this.#track(deleteKeys(this.#etcd, keys, this.#closed.signal));
    return remote;
  }

  /** Stops following etcd and gives the lease up, deleting this node's keys. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#closed.abort();
    clearTimeout(this.#flush);
    const space = this.#space;
    this.#space = null;
    // Its writes stop first: the lease's revocation deletes every key anyway.
    await space?.[Symbol.asyncDispose]();
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
    await space?.lease[Symbol.asyncDispose]();
  }

  async #ask(space: EtcdLockSpace, request: NodeRequest): Promise<void> {
    const { owner: session, ticket } = request;
    let result: AcquireResult;
    try {
      result = await space.acquire(session.id, ticket.name, {
        mode: ticket.mode,
        limit: ticket.limit,
        wait: ticket.wait !== 0,
        peer: session.peer,
        label: session.label,
      });
    } catch (error) {
      if (request.state === "ended" && !request.cancelled) return;
      this.#mine.end(request);
      failAcquire(session, ticket, error as Error);
      return;
    }
    const events = this.#events!;
    if (result.status === "busy" || result.status === "refused") {
      if (request.state !== "ended" || request.cancelled) {
        this.#mine.end(request);
        events.refused(
          session,
          ticket,
          "reason" in result ? result.reason : "busy",
        );
      }
      return;
    }
    request.cluster = result.request;
    if (request.state === "ended") {
      this.#releaseKey(request);
      if (request.cancelled) {
        // The client withdrew it before etcd answered: it never held.
        events.queued(request);
        events.withdrawn(request, "cancelled");
      }
      return;
    }
    if (result.status === "granted") this.#grant(request);
    else {
      request.state = "waiting";
      events.queued(request);
      // Granted between etcd's answer and now: `#onGrant` found it pending.
      if (result.request.state === "held") this.#grant(request);
    }
    events.changed(ticket.name);
  }

  /** A waiting request of this node holds now (the mirror shows its grant). */
  #onGrant(cluster: ClusterRequest): void {
    const request = this.#mine.behind(cluster);
    if (request === undefined || request.state !== "waiting") return;
    this.#grant(request);
    this.#events!.changed(request.name);
  }

  /** A request's key went without its owner's say: close its connection. */
  #onLost(cluster: ClusterRequest, reason: string): void {
    const request = this.#mine.behind(cluster);
    if (request !== undefined) closeLost(request, cluster.token, reason);
  }

  /** A queued request lost a race with another node's: refused after all. */
  #onRefused(
    cluster: ClusterRequest,
    reason: "deadlock" | "limit_mismatch",
  ): void {
    const request = this.#mine.behind(cluster);
    if (request === undefined || request.state === "ended") return;
    const was = request.state;
    this.#mine.end(request);
    const events = this.#events!;
    // Its queueing was reported: it leaves the queue, and the refusal is
    // its answer.
    if (was === "waiting") events.withdrawn(request, "disconnect");
    events.refused(request.owner, request.ticket, reason);
    events.changed(request.name);
  }

  /** Queues changed on some node: this node's waiters and holders are told. */
  #onQueues(names: Iterable<string>): void {
    for (const name of names) {
      if (this.#mine.has(name)) this.#events!.changed(name);
    }
  }

  #grant(request: NodeRequest): void {
    request.state = "held";
    request.token = request.cluster!.token;
    this.#events!.granted(request);
  }

  #releaseKey(request: NodeRequest): void {
    const space = this.#space;
    if (request.cluster !== null && space !== null) {
      this.#track(space.release(request.cluster));
    }
  }

  #inspectWhole(name: string): LockState<RequestOwner, Timing> | null {
    const space = this.#space;
    return space && wholeState(space, this.#mine, name);
  }

  #track<T>(task: Promise<T>): void {
    this.#tasks.add(task);
    task.catch(() => {}).finally(() => this.#tasks.delete(task));
  }

  #watchLease(space: EtcdLockSpace): void {
    space.lease.lost.addEventListener("abort", () => {
      this.#space = null;
      if (this.#closed.signal.aborted) return;
      // Every connection with a request was told and is closing; one whose
      // peer does not read is closed before the lease can expire, told or not.
      const told = this.#mine.sessions();
      this.#flush = setTimeout(() => {
        for (const session of told) session.connection.close();
      }, (this.#options.marginMs ?? 1_000) / 2);
      const reason = (space.lease.lost.reason as Error).message;
      this.#options.onLease?.("lost", reason);
      this.#track(this.#recover(space));
    }, { once: true });
  }

  /** Drops the lost space and opens a new one once etcd answers. */
  async #recover(lost: EtcdLockSpace): Promise<void> {
    await lost[Symbol.asyncDispose]();
    const space = await reopenNodeSpace(
      this.#etcd,
      this.#options,
      ClusterLockSpace.#reports(() => this),
      this.#closed.signal,
    );
    if (space === null) return;
    this.#space = space;
    this.#node = space.node;
    this.#watchLease(space);
    this.#options.onLease?.("renewed", `node ${space.node}`);
  }

  /** Where a node space reports what etcd decided later: to `target()`. */
  static #reports(target: () => ClusterLockSpace | undefined): SpaceReports {
    return {
      onGrant: (request) => target()!.#onGrant(request),
      onLost: (request, reason) => target()!.#onLost(request, reason),
      onRefused: (request, reason) => target()!.#onRefused(request, reason),
      onQueues: (names) => {
        const self = target();
        if (self !== undefined) self.#onQueues(names);
      },
    };
  }
}
