/**
 * A cluster node's requests as the lock server sees them (owned by its
 * sessions, carrying its tickets), indexed by session and by lock, and the
 * whole cluster's locks as `status` shows them, from the node's mirror.
 *
 * @module
 */

import type { Timing } from "../server/journal.ts";
import type {
  LockRequest,
  LockState,
  RequestOwner,
} from "../server/lock_space.ts";
import type { Ticket } from "../server/outcomes.ts";
import type { Session } from "../server/session.ts";
import type { EtcdLockSpace } from "./lock_space.ts";
import type { ClusterRequest } from "./own_requests.ts";

/**
 * Where a request stands: its acquire txn is under way (`pending`), it waits,
 * it holds, or it has ended.
 */
export type NodeRequestState = "pending" | "waiting" | "held" | "ended";

/** A request of this node as the lock server sees it. */
export class NodeRequest implements LockRequest<Session, Ticket> {
  /** Where it stands. */
  state: NodeRequestState = "pending";
  /** The fencing token, once held; 0 before. */
  token = 0;
  /** The etcd request, once the acquire has answered. */
  cluster: ClusterRequest | null = null;
  /** Released while its acquire was under way: answered `cancelled`. */
  cancelled = false;

  /**
   * @param owner The session that asked.
   * @param ticket What it asked for, and how to answer.
   */
  constructor(readonly owner: Session, readonly ticket: Ticket) {}

  /** The lock's name. */
  get name(): string {
    return this.ticket.name;
  }

  /** The mode asked for. */
  get mode(): Ticket["mode"] {
    return this.ticket.mode;
  }

  /** Whether it holds the lock. */
  get held(): boolean {
    return this.state === "held";
  }
}

/** One lock's holders and waiters on this node. */
export interface NodeLockState extends LockState<Session, Ticket> {
  /** This node's holders, in grant order. */
  holders: NodeRequest[];
  /** This node's waiters, first in line first. */
  waiters: NodeRequest[];
}

/** This node's requests that have not ended, by session and by lock. */
export class NodeRequests {
  readonly #bySession = new Map<Session, Map<string, NodeRequest>>();
  readonly #byName = new Map<string, Set<NodeRequest>>();

  /**
   * Adds a new request.
   *
   * @param request It, `pending`.
   */
  add(request: NodeRequest): void {
    let mine = this.#bySession.get(request.owner);
    if (!mine) this.#bySession.set(request.owner, mine = new Map());
    mine.set(request.name, request);
    let ofName = this.#byName.get(request.name);
    if (!ofName) this.#byName.set(request.name, ofName = new Set());
    ofName.add(request);
  }

  /**
   * Ends a request: it leaves the index and never changes state again.
   *
   * @param request It.
   */
  end(request: NodeRequest): void {
    if (request.state === "ended") return;
    request.state = "ended";
    const mine = this.#bySession.get(request.owner);
    if (mine?.get(request.name) === request) mine.delete(request.name);
    if (mine?.size === 0) this.#bySession.delete(request.owner);
    const ofName = this.#byName.get(request.name);
    ofName?.delete(request);
    if (ofName?.size === 0) this.#byName.delete(request.name);
  }

  /**
   * A session's request for one lock.
   *
   * @param session The session.
   * @param name The lock.
   * @returns It, or `undefined`.
   */
  find(session: Session, name: string): NodeRequest | undefined {
    return this.#bySession.get(session)?.get(name);
  }

  /**
   * A session's requests.
   *
   * @param session The session.
   * @returns Them, as a copy that ending them does not disturb.
   */
  of(session: Session): NodeRequest[] {
    return [...this.#bySession.get(session)?.values() ?? []];
  }

  /**
   * Every session with a request.
   *
   * @returns Them, as a copy.
   */
  sessions(): Session[] {
    return [...this.#bySession.keys()];
  }

  /**
   * How many requests a session has.
   *
   * @param session The session.
   * @returns The count.
   */
  countOf(session: Session): number {
    return this.#bySession.get(session)?.size ?? 0;
  }

  /**
   * The request behind an etcd request: the one that carries it, or the
   * pending one of its connection whose acquire has not answered yet.
   *
   * @param cluster The etcd request.
   * @returns It, or `undefined` when it has ended.
   */
  behind(cluster: ClusterRequest): NodeRequest | undefined {
    for (const request of this.#byName.get(cluster.name) ?? []) {
      if (request.cluster === cluster) return request;
      if (request.cluster === null && request.owner.id === cluster.conn) {
        return request;
      }
    }
    return undefined;
  }

  /**
   * The request that owns an etcd key.
   *
   * @param name The lock.
   * @param key The key.
   * @returns It, or `undefined`.
   */
  byKey(name: string, key: string): NodeRequest | undefined {
    for (const request of this.#byName.get(name) ?? []) {
      if (request.cluster?.key === key) return request;
    }
    return undefined;
  }

  /**
   * One lock's holders and waiters on this node.
   *
   * @param name The lock.
   * @returns Its state here, or `null` when none of this node's requests holds
   *   or waits for it.
   */
  inspect(name: string): NodeLockState | null {
    const holders: NodeRequest[] = [];
    const waiters: NodeRequest[] = [];
    for (const request of this.#byName.get(name) ?? []) {
      if (request.state === "held") holders.push(request);
      else if (request.state === "waiting") waiters.push(request);
    }
    if (holders.length + waiters.length === 0) return null;
    const place = (r: NodeRequest) => r.cluster?.createRevision ?? 0;
    holders.sort((a, b) => a.token - b.token);
    waiters.sort((a, b) => place(a) - place(b));
    const mode = (holders[0] ?? waiters[0])!.mode;
    const isShared = (r: NodeRequest) => r.mode === "shared";
    const shared = holders.find(isShared) ?? waiters.find(isShared);
    const limit = shared?.ticket.limit ?? Infinity;
    return { name, mode, limit, holders, waiters };
  }

  /**
   * Whether this node has a request for a lock.
   *
   * @param name The lock.
   * @returns Whether it has.
   */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /**
   * Every lock this node has a request for.
   *
   * @returns The names.
   */
  names(): Iterable<string> {
    return this.#byName.keys();
  }
}

/**
 * One lock's holders and queue across the whole cluster, from a node's
 * mirror: a holder is a request that holds by the grant rule (its token is
 * 0 while the mirror knows none: granted before the mirror's listing with
 * no record of it yet, or let in past a revision's slots and not yet
 * marked); a request this node has ended is left out, though its delete may
 * still be on the way. Requests of this node carry their tickets (when asked
 * and granted); those of other nodes the time their node received them, and
 * the time of their grant: of its mark, of the node's mirror seeing the
 * deletes that let it in, or, granted at once, again the time their node
 * received them.
 *
 * @param space The node's etcd lock space.
 * @param mine The node's own requests.
 * @param name The lock.
 * @returns Its state, or `null` when nobody holds or waits for it.
 */
export function wholeState(
  space: EtcdLockSpace,
  mine: NodeRequests,
  name: string,
): LockState<RequestOwner, Timing> | null {
  const queue = space.mirror.queue(name).filter((m) => !space.ended(m));
  if (queue.length === 0) return null;
  const holders: LockRequest<RequestOwner, Timing>[] = [];
  const waiters: LockRequest<RequestOwner, Timing>[] = [];
  const holding = new Set(space.mirror.holders(name));
  for (const mirrored of queue) {
    const { since, peer = "", label } = mirrored.value;
    const local = mirrored.node === space.node
      ? mine.byKey(name, mirrored.key)
      : undefined;
    // This node's own: held once its client was told.
    const held = local ? local.held : holding.has(mirrored);
    const granted = mirrored.grant?.at ?? since;
    (held ? holders : waiters).push({
      owner: { id: mirrored.conn, peer, label, node: mirrored.node },
      name,
      mode: mirrored.mode,
      ticket: local?.ticket ?? { asked: since, granted },
      held,
      token: local?.token || space.tokenOf(mirrored),
    });
  }
  const mode = (holders[0] ?? waiters[0])!.mode;
  return {
    name,
    mode,
    limit: space.mirror.limit(name) ?? Infinity,
    holders,
    waiters,
  };
}
