/**
 * The slots of the grants that deletes make, pure. A fencing token is a
 * revision and a slot in it (`tokenFor` in `group_commit.ts`). A write that
 * puts a request granted (an acquire that holds at once, a mark) takes its
 * op's index in the txn, kept in the key's value. A request that comes to
 * hold because keys before it were deleted is granted at the revision of
 * those deletes, with no write of its own: every node sees the same
 * revisions, so each gives it the same slot, the first one that no write of
 * that revision took, in key order. Past the last slot a request gets none,
 * and its own node grants it by a mark.
 *
 * @module
 */

import { TOKEN_SLOTS } from "./group_commit.ts";

/**
 * The slots of the requests that came to hold at one revision without a
 * write of their own.
 *
 * @param taken The slots of that revision's writes that put a request
 *   granted.
 * @param keys The keys of the requests that came to hold, in any order.
 * @returns Each key's slot; a key left out has none (its node marks it).
 */
export function implicitSlots(
  taken: ReadonlySet<number>,
  keys: readonly string[],
): Map<string, number> {
  const slots = new Map<string, number>();
  let slot = 0;
  for (const key of [...keys].sort()) {
    while (taken.has(slot)) slot++;
    if (slot >= TOKEN_SLOTS) break;
    slots.set(key, slot++);
  }
  return slots;
}
