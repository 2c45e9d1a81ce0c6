/**
 * A whole `status` report read page by page: the server sends it in bounded
 * pages, and this joins them.
 *
 * @module
 */

import type {
  StatusLock,
  StatusParameters,
  StatusResult,
} from "../protocol/lock_protocol.ts";

/** Options of {@linkcode LockClient.status}. */
export interface StatusOptions {
  /**
   * List only the locks whose name matches: `*` matches any run of
   * characters, `?` any one, everything else itself.
   *
   * @default {Every lock}
   */
  pattern?: string | undefined;
  /**
   * List at most this many locks; the totals still count every match.
   *
   * @default {No limit}
   */
  limit?: number | undefined;
  /** Stops waiting for the report; pages already read are dropped. */
  signal?: AbortSignal | undefined;
}

/**
 * Asks for the first page, then for the next one while there is a `next`,
 * and joins them: a lock split across pages (`more`) becomes one, and the
 * locks are sorted by name.
 *
 * @param ask Sends one `status` request and resolves with its page.
 * @param options The pattern and the limit.
 * @returns The whole report, with the last page's `totals`.
 * @throws Whatever `ask` throws.
 */
export async function readStatus(
  ask: (parameters: StatusParameters) => Promise<StatusResult>,
  options: StatusOptions = {},
): Promise<StatusResult> {
  const { pattern, limit } = options;
  const start: StatusParameters = {};
  if (pattern !== undefined) start.pattern = pattern;
  if (limit !== undefined) start.limit = limit;
  let page = await ask(start);
  const locks: StatusLock[] = [];
  let split: StatusLock | undefined;
  while (true) {
    for (const lock of page.locks) {
      if (split !== undefined && split.name === lock.name) {
        split.holders.push(...lock.holders);
        split.waiters.push(...lock.waiters);
      } else {
        locks.push(lock);
        split = lock;
      }
      if (!lock.more) split = undefined;
    }
    if (page.next === undefined) break;
    page = await ask({ cursor: page.next });
  }
  for (const lock of locks) delete lock.more;
  locks.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const { next: _next, ...last } = page;
  return { ...last, locks };
}
