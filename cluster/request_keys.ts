/**
 * The key layout of one lock request in etcd, pure: where a lock's requests
 * live, the key of one request and its value, read back.
 *
 * Layout under a root prefix (`/pklock/v1`):
 *
 * ```
 * <root>/q/<enc(name)>/x/<node>.<seat>   an exclusive request   (lease: the node's)
 * <root>/q/<enc(name)>/s/<node>.<seat>   a shared request       (lease: the node's)
 * <root>/q/<enc(name)>/l/<node>.<seat>   a shared one, limited  (lease: the node's)
 * <root>/nodes/<node>                    a live node            (lease: the node's)
 * <root>/meta/tokenBase                  added to every fencing token
 * ```
 *
 * `enc` is `encodeURIComponent`, which escapes `/`, so the prefix of one name
 * never covers another. `node` is the node lease's id in hex. Order is by
 * create revision, across both modes. A shared request with a limit (a
 * semaphore) keeps it in its value, under `l/`, so that a compare can tell
 * whether a lock has any: one without a limit cannot share with them.
 *
 * A `seat` is reused by the node's later requests of the same lock and kind
 * (`request_seats.ts`), and the connection that owns a request is in its
 * value: etcd 3.4 visits every key a range compare covers, deleted ones
 * included until compaction, so a lock whose keys were all new would cost
 * its acquires more with each request since the last compaction.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";

/** What a request's key holds besides its place in the key. */
export interface RequestValue {
  /** The connection on the owning node; absent in a value not ours. */
  conn?: number | undefined;
  /**
   * The request's number on its node: tells a request's own write, sent
   * again by the etcd client, from an older request's on the same key.
   */
  req?: number | undefined;
  /** Who asked, for status. */
  peer?: string | undefined;
  /** The client's label, for status. */
  label?: string | undefined;
  /** When the node received the request (ms since the epoch). */
  since: number;
  /**
   * A shared request's limit, under `l/`: the most shared holders at once (a
   * semaphore); absent when unbounded.
   */
  limit?: number | undefined;
  /**
   * Set by the write that granted the request, so the key's mod revision is
   * the grant's revision.
   */
  granted?: boolean | undefined;
  /**
   * When the mark that granted a waiting request was written (ms since the
   * epoch); a request granted by the txn that queued it was granted at
   * `since`.
   */
  grantedAt?: number | undefined;
  /**
   * The grant's index in its txn: with the mod revision and the token base,
   * the fencing token (`tokenFor` in `group_commit.ts`).
   */
  slot?: number | undefined;
  /**
   * The revision of the grant, when the deletes before the request made it
   * and its node recorded it later (`grant_records.ts`): then the fencing
   * token's revision, instead of the mod revision.
   */
  grantRevision?: number | undefined;
}

/** The parts of a request's key. */
export interface RequestKey {
  /** The lock's name. */
  name: string;
  /** The mode asked for. */
  mode: LockMode;
  /** A shared request with a limit (in its value): its key is under `l/`. */
  limited?: true | undefined;
  /** The owning node's lease id in hex. */
  node: string;
  /** The key's number among the node's keys of this lock and kind. */
  seat: number;
}

/** Which of a lock's requests: of one mode, or the shared ones with a limit. */
export type RequestKind = LockMode | "limited";

/** The segment of each kind of request in its key. */
const SEGMENTS: Record<RequestKind, string> = {
  exclusive: "x",
  shared: "s",
  limited: "l",
};

/**
 * Where the requests of one lock live: every request of it, or only those
 * of one kind.
 *
 * @param root The root prefix.
 * @param name The lock's name.
 * @param kind Only the requests of this kind (`shared`: those without a
 *   limit); absent for all.
 * @returns The prefix.
 */
export function lockPrefix(
  root: string,
  name: string,
  kind?: RequestKind,
): string {
  const prefix = `${root}/q/${encodeURIComponent(name)}/`;
  return kind === undefined ? prefix : `${prefix}${SEGMENTS[kind]}/`;
}

/**
 * The key of one request.
 *
 * @param root The root prefix.
 * @param request Its parts.
 * @returns The key.
 */
export function requestKey(root: string, request: RequestKey): string {
  const kind = request.limited ? "limited" : request.mode;
  return `${
    lockPrefix(root, request.name, kind)
  }${request.node}.${request.seat}`;
}

/**
 * A connection's name across the cluster: the owner of its requests.
 *
 * @param node The node's lease id in hex.
 * @param conn The connection on that node.
 * @returns The owner.
 */
export function ownerOf(node: string, conn: number): string {
  return `${node}.${conn}`;
}

/**
 * Reads a request's key back.
 *
 * @param root The root prefix.
 * @param key The key.
 * @returns Its parts, or `null` when it is no request key.
 */
export function parseRequestKey(root: string, key: string): RequestKey | null {
  const queues = `${root}/q/`;
  if (!key.startsWith(queues)) return null;
  const parts = key.slice(queues.length).split("/");
  if (parts.length !== 3) return null;
  const [encoded, mode, id] = parts as [string, string, string];
  const match = /^([0-9a-f]+)\.(\d+)$/.exec(id);
  if (!match || (mode !== "x" && mode !== "s" && mode !== "l")) return null;
  let name: string;
  try {
    name = decodeURIComponent(encoded);
  } catch {
    return null;
  }
  const request: RequestKey = {
    name,
    mode: mode === "x" ? "exclusive" : "shared",
    node: match[1]!,
    seat: Number(match[2]),
  };
  if (mode === "l") request.limited = true;
  return request;
}

/**
 * Reads a request key's value; a value that is not ours reads as empty.
 *
 * @param text The value.
 * @returns What it holds.
 */
export function parseRequestValue(text: string): RequestValue {
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && typeof value.since === "number") {
      return value;
    }
  } catch {
    // Not ours: an operator's write. The key still counts in the queue.
  }
  return { since: 0 };
}
