/**
 * The seats of a node's request keys, pure: which key the node's next
 * request of a lock takes. A key whose request has ended is taken again by a
 * later request of the same lock and kind once it is gone for sure, so that
 * a lock's keys stay few: etcd 3.4 visits every key a range compare covers,
 * deleted keys included until the next compaction, and every acquire
 * compares its lock's whole prefix. With a new key per request, a lock taken
 * 100 times a second would make each acquire visit 30,000 deleted keys five
 * minutes after a compaction.
 *
 * A key is gone for sure when every delete of it that the node sent was
 * taken by etcd at its first try: a write that failed may still commit later
 * (a member that had taken it resumes), and if it were a delete it would
 * delete the next request's key. A key with such a write is never taken
 * again; neither is the key of an acquire whose outcome is unknown (the
 * caller keeps those out). It is taken again only once the node's mirror is
 * past the delete, so that the mirror never shows a key's old request after
 * its new one has begun. The etcd client may still have sent a "first try"
 * twice (to another member, after a timeout), so the writes themselves are
 * guarded as well (`request_writes.ts`): the acquire writes only while the
 * key is absent, the delete only while it has its request's create revision.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import { lockPrefix, requestKey } from "./request_keys.ts";

/** The most locks and kinds whose vacated keys are kept; beyond, the oldest go. */
const MAX_LOCKS = 4096;
/** The most vacated keys kept for one lock and kind. */
const MAX_VACATED = 64;

/** A key whose request has ended. */
interface Vacated {
  readonly key: string;
  /** The revision of its last delete. */
  readonly revision: number;
}

/** A key being deleted. */
interface Leaving {
  /** Its deletes not yet answered. */
  pending: number;
  /** The revision of the last delete taken. */
  revision: number;
  /** Whether a delete was not taken at its first try. */
  doubtful: boolean;
}

/** What a request's key depends on besides its seat. */
export interface SeatOf {
  /** The lock's name. */
  readonly name: string;
  /** Its mode. */
  readonly mode: LockMode;
  /** Whether it is a shared request with a limit. */
  readonly limited?: true | undefined;
}

/** The keys of one node's requests: new ones, and vacated ones taken again. */
export class RequestSeats {
  readonly #root: string;
  readonly #node: string;
  /** Seats never used: numbers are not reused across locks. */
  #next = 0;
  /** Vacated keys, by the prefix of their lock and kind, oldest lock first. */
  readonly #vacated = new Map<string, Vacated[]>();
  readonly #leaving = new Map<string, Leaving>();

  /**
   * @param root The root prefix.
   * @param node The node's lease id in hex.
   */
  constructor(root: string, node: string) {
    this.#root = root;
    this.#node = node;
  }

  /**
   * The key of a new request: a vacated key of its lock and kind whose
   * delete the mirror has seen, or a new one.
   *
   * @param request What the key depends on.
   * @param seen The mirror's revision.
   * @returns The key.
   */
  take(request: SeatOf, seen: number): string {
    const kind = request.limited ? "limited" : request.mode;
    const lock = lockPrefix(this.#root, request.name, kind);
    const vacated = this.#vacated.get(lock);
    const at = vacated?.findIndex((v) => v.revision <= seen) ?? -1;
    if (vacated && at >= 0) {
      const { key } = vacated[at]!;
      vacated[at] = vacated.at(-1)!;
      vacated.pop();
      if (vacated.length === 0) this.#vacated.delete(lock);
      return key;
    }
    const seat = this.#next++;
    return requestKey(this.#root, { ...request, node: this.#node, seat });
  }

  /**
   * A key whose acquire wrote nothing (it would not wait): vacated at once.
   *
   * @param key The key.
   * @param revision The revision of the acquire's answer.
   */
  unused(key: string, revision: number): void {
    this.leaving([key])(key, revision);
  }

  /**
   * Deletes of keys are on their way.
   *
   * @param keys The keys.
   * @returns What to call as each delete ends ({@linkcode RequestSeats.left}),
   *   for these keys only.
   */
  leaving(
    keys: readonly string[],
  ): (key: string, revision: number | undefined) => void {
    for (const key of keys) this.#leavingOne(key);
    const mine = new Set(keys);
    return (key, revision) => {
      if (mine.has(key)) this.left(key, revision);
    };
  }

  #leavingOne(key: string): void {
    const leaving = this.#leaving.get(key);
    if (leaving) leaving.pending++;
    else this.#leaving.set(key, { pending: 1, revision: 0, doubtful: false });
    const lock = this.#vacated.get(lockOf(key));
    const at = lock?.findIndex((v) => v.key === key) ?? -1;
    if (lock && at >= 0) lock.splice(at, 1);
  }

  /**
   * A key whose acquire's outcome is unknown: never vacated, even by a
   * delete already on its way.
   *
   * @param key The key.
   */
  retire(key: string): void {
    const leaving = this.#leaving.get(key);
    if (leaving) leaving.doubtful = true;
  }

  /**
   * A delete of a key has ended. Once its last has, the key is vacated,
   * unless one was not taken at its first try.
   *
   * @param key The key.
   * @param revision The revision etcd took it at, or `undefined` when it
   *   was not taken at its first try (or not at all).
   */
  left(key: string, revision: number | undefined): void {
    const leaving = this.#leaving.get(key);
    if (!leaving) return;
    if (revision === undefined) leaving.doubtful = true;
    else leaving.revision = Math.max(leaving.revision, revision);
    if (--leaving.pending > 0) return;
    this.#leaving.delete(key);
    if (leaving.doubtful) return;
    const lock = lockOf(key);
    const vacated = this.#vacated.get(lock) ?? [];
    this.#vacated.delete(lock);
    if (vacated.length < MAX_VACATED) {
      vacated.push({ key, revision: leaving.revision });
    }
    this.#vacated.set(lock, vacated);
    if (this.#vacated.size > MAX_LOCKS) {
      this.#vacated.delete(this.#vacated.keys().next().value!);
    }
  }
}

/** The prefix of a request key's lock and kind: all but its last segment. */
function lockOf(key: string): string {
  return key.slice(0, key.lastIndexOf("/") + 1);
}
