/**
 * When the txn that queues a request may grant it at once, pure: the
 * compares under which the request, written by that txn, holds by the grant
 * rule of `lock_mirror.ts` at the txn's revision.
 *
 * - An exclusive request holds when its lock has no key at all.
 * - A shared one without a limit holds when its lock has no exclusive key and
 *   no shared key with a limit (`l/`): two compares, exact.
 * - A shared one with a limit holds when every request before it is shared
 *   with its limit and there are fewer than that limit; a compare can count
 *   no keys nor read a limit out of a value. So the node asks what it knows
 *   (its mirror, or a listing) whether the lock's limited requests all have
 *   that limit and are fewer; the txn then checks that the lock has no
 *   exclusive key, no shared key without a limit, and no limited key created
 *   after what the node knows (keys deleted since only leave fewer before
 *   it). When what the node knows does not allow it, the compare never
 *   holds: the request is written waiting, and if it holds all the same
 *   once that txn has committed, the mirror grants it at the txn's revision
 *   (`grant_slots.ts`).
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import type { Compare, KeyValue } from "./etcd_codec.ts";
import { limitOf } from "./lock_mirror.ts";
import {
  lockPrefix,
  parseRequestKey,
  parseRequestValue,
} from "./request_keys.ts";

/** A request of the lock as the node knows it. */
export interface KnownRequest {
  /** Its mode. */
  readonly mode: LockMode;
  /** Its limit: `Infinity` when unbounded. */
  readonly limit: number;
}

/** A lock's requests as the node knows them at one revision. */
export interface KnownLock {
  /** Every request created up to this revision is in `requests`. */
  readonly revision: number;
  /** Its requests; deleted ones may still be there. */
  readonly requests: Iterable<KnownRequest>;
}

/**
 * Whether a shared request with `limit` would hold if the lock's exclusive
 * requests were gone: every shared request known has that limit, and they
 * are fewer than it.
 *
 * @param known The lock's requests.
 * @param limit The limit asked for; `Infinity` when unbounded.
 * @returns Whether it fits.
 */
export function sharedFits(
  known: Iterable<KnownRequest>,
  limit: number,
): boolean {
  let shared = 0;
  for (const request of known) {
    if (request.mode !== "shared") continue;
    if (request.limit !== limit) return false;
    shared++;
  }
  return shared < limit;
}

/**
 * The compares of the txn that queues a request, under which it holds once
 * written.
 *
 * @param root The root prefix.
 * @param name The lock's name.
 * @param mode The mode asked for.
 * @param limit The limit asked for, when shared; `Infinity` when unbounded.
 * @param known What the node knows of the lock, for a shared request with a
 *   limit.
 * @returns The compares; for a shared request with a limit that does not
 *   fit what the node knows, one that never holds.
 */
export function freeNow(
  root: string,
  name: string,
  mode: LockMode,
  limit: number,
  known: KnownLock,
): Compare[] {
  const empty = { prefix: true, target: "create", value: 0 } as const;
  const none = (kind?: "exclusive" | "shared" | "limited"): Compare => ({
    ...empty,
    key: lockPrefix(root, name, kind),
    result: "==",
  });
  if (mode === "exclusive") return [none()];
  if (limit === Infinity) return [none("exclusive"), none("limited")];
  if (!sharedFits(known.requests, limit)) {
    // No key has a create revision below 0, and an empty range reads as 0.
    return [{ ...none(), result: "<" }];
  }
  return [none("exclusive"), none("shared"), {
    ...none("limited"),
    result: "<",
    value: known.revision + 1,
  }];
}

/**
 * A lock's requests from a listing of its prefix.
 *
 * @param root The root prefix.
 * @param kvs The keys under the lock's prefix.
 * @returns Those that are requests.
 */
export function knownFrom(root: string, kvs: KeyValue[]): KnownRequest[] {
  const known: KnownRequest[] = [];
  for (const kv of kvs) {
    const parts = parseRequestKey(root, kv.key);
    if (!parts) continue;
    const limit = parts.limited
      ? limitOf(parseRequestValue(kv.value))
      : Infinity;
    known.push({ mode: parts.mode, limit });
  }
  return known;
}
