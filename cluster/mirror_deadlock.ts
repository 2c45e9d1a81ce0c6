/**
 * Deadlock refusal on a node's mirror, decided as one server decides it,
 * pure. The mirror's cycle search (`waitClosesCycle`, `mirror_cycles.ts`) is the
 * filter: with a limit, a shared request counts as waiting for every earlier
 * one, so every deadlock has such a cycle. A cycle is rare; when there is
 * one, the part of the mirror it reaches is copied into the shapes of
 * `server/deadlock.ts` and one server's reduction decides, since with a
 * limit above one a cycle alone is no deadlock (a holder outside it may free
 * a slot).
 *
 * The copy holds only requests older than the one asked about (created
 * before it, or in the same txn with a key that sorts first: `olderThan`),
 * as the cycle search counts them: the youngest request of a deadlock is
 * the one refused, by its own node.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import {
  deadlocked,
  type SearchedLock,
  type SearchedRequest,
} from "../server/deadlock.ts";
import type { LockMirror, MirroredRequest } from "./lock_mirror.ts";
import { olderThan, waitClosesCycle } from "./mirror_cycles.ts";

/** What {@linkcode waitDeadlocks} asks about besides the owner and the lock. */
export interface WaitOptions {
  /** The mode asked for. */
  mode: LockMode;
  /** The limit asked for, when shared; `Infinity` when unbounded. */
  limit: number;
  /** The request, in the mirror; absent for one not yet queued. */
  request?: MirroredRequest | undefined;
  /** Requests to leave out: those the caller knows are gone. */
  skip?: ((request: MirroredRequest) => boolean) | undefined;
}

/**
 * Whether a request waiting (or about to) for a lock is deadlocked: its
 * owner would never run again.
 *
 * @param mirror The node's mirror.
 * @param owner The request's owner.
 * @param name The lock's name.
 * @param options Its mode and limit, itself when queued, what to leave out.
 * @returns Whether it is deadlocked.
 */
export function waitDeadlocks(
  mirror: LockMirror,
  owner: string,
  name: string,
  options: WaitOptions,
): boolean {
  const { mode, limit, request, skip } = options;
  if (!waitClosesCycle(mirror, owner, name, mode, request, skip, limit)) {
    return false;
  }
  const copy = new MirrorCopy(mirror, request, skip);
  const asked = copy.ask(owner, name, mode, limit);
  return !asked.held && deadlocked(asked, copy.owners, copy.waiting);
}

class Copied implements SearchedRequest<string> {
  held = false;
  next: Copied | null = null;

  constructor(
    readonly owner: string,
    readonly mode: LockMode,
    readonly limit: number,
    readonly lock: CopiedLock,
  ) {}
}

class CopiedLock implements SearchedLock<string> {
  readonly holders = new Set<Copied>();
  head: Copied | null = null;
  mode: LockMode = "exclusive";
  /** The limit of its oldest shared request, as the mirror's. */
  limit = Infinity;
  #shared = false;
  #tail: Copied | null = null;

  /** Adds a request behind the others, holding when the grant rule says. */
  add(request: Copied): void {
    const first = this.holders.size === 0 && this.head === null;
    if (request.mode === "shared" && !this.#shared) {
      this.#shared = true;
      this.limit = request.limit;
    }
    if (
      first || (this.head === null && request.mode === "shared" &&
        this.mode === "shared" && request.limit === this.limit &&
        this.holders.size < this.limit)
    ) {
      request.held = true;
      this.mode = request.mode;
      this.holders.add(request);
    } else if (this.#tail === null) {
      this.head = this.#tail = request;
    } else {
      this.#tail = this.#tail.next = request;
    }
  }
}

/** The locks and owners of a mirror that a request reaches, copied. */
class MirrorCopy {
  /** Each owner's requests, by lock. */
  readonly owners = new Map<string, Map<string, Copied>>();
  /** Each owner's waiting requests. */
  readonly waiting = new Map<string, Set<Copied>>();
  readonly #locks = new Map<string, CopiedLock>();
  readonly #mirror: LockMirror;
  readonly #asked: MirroredRequest | undefined;
  readonly #skip: (request: MirroredRequest) => boolean;
  readonly #pending: string[] = [];

  constructor(
    mirror: LockMirror,
    asked: MirroredRequest | undefined,
    skip: ((request: MirroredRequest) => boolean) | undefined,
  ) {
    this.#mirror = mirror;
    this.#asked = asked;
    this.#skip = skip ?? (() => false);
  }

  /**
   * Copies what a request reaches, and the request at the tail of its lock.
   *
   * @returns The request's copy.
   */
  ask(owner: string, name: string, mode: LockMode, limit: number): Copied {
    const lock = this.#lock(name);
    this.#reach(owner);
    for (let next; (next = this.#pending.pop()) !== undefined;) {
      for (const request of this.#mirror.requestsOf(next)) {
        if (this.#counts(request)) this.#lock(request.name);
      }
    }
    const asked = new Copied(owner, mode, limit, lock);
    lock.add(asked);
    this.#own(name, asked);
    return asked;
  }

  #counts(request: MirroredRequest): boolean {
    const asked = this.#asked;
    return (asked === undefined || olderThan(request, asked)) &&
      !this.#skip(request);
  }

  #lock(name: string): CopiedLock {
    let lock = this.#locks.get(name);
    if (lock !== undefined) return lock;
    lock = new CopiedLock();
    this.#locks.set(name, lock);
    for (const request of this.#mirror.queue(name)) {
      if (!this.#counts(request)) continue;
      const copy = new Copied(request.owner, request.mode, request.limit, lock);
      lock.add(copy);
      this.#own(name, copy);
    }
    return lock;
  }

  #own(name: string, request: Copied): void {
    this.#reach(request.owner);
    this.owners.get(request.owner)!.set(name, request);
    if (!request.held) this.waiting.get(request.owner)!.add(request);
  }

  #reach(owner: string): void {
    if (this.owners.has(owner)) return;
    this.owners.set(owner, new Map());
    this.waiting.set(owner, new Set());
    this.#pending.push(owner);
  }
}
