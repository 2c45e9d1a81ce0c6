/**
 * Assertions shared by the integration tests: about the lock table as
 * `status` reports it, and about the errors the client library raises.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type LockClient, RemoteError, type StatusResult } from "../mod.ts";

/**
 * A predicate for `assert.rejects`: whether an error is a RemoteError with
 * this code.
 *
 * @param code The error reply's code.
 * @returns The predicate.
 */
export function remote(code: string): (error: unknown) => boolean {
  return (error) => error instanceof RemoteError && error.code === code;
}

/**
 * Checks the lock table as `status` reports it: every lock has a holder or a
 * waiter (indeed a holder: nobody waits for a free lock), an exclusive lock
 * has exactly one holder, shared holders are all shared, holders carry a
 * token and waiters none, and no connection appears twice in one lock.
 *
 * @param status A status report.
 * @throws {assert.AssertionError} When one of the rules is broken.
 */
export function assertConsistent(status: StatusResult): void {
  for (const lock of status.locks) {
    const all = [...lock.holders, ...lock.waiters];
    const what = JSON.stringify(lock);
    assert.ok(all.length >= 1, `lock with nobody in it: ${what}`);
    assert.ok(lock.holders.length >= 1, `waiters but no holder: ${what}`);
    if (lock.mode === "exclusive") {
      assert.equal(lock.holders.length, 1, `exclusive lock: ${what}`);
    }
    for (const holder of lock.holders) {
      assert.equal(holder.mode, lock.mode, `holder's mode: ${what}`);
      assert.equal(typeof holder.token, "number", `holder's token: ${what}`);
    }
    for (const waiter of lock.waiters) {
      assert.equal(waiter.token, undefined, `waiter with a token: ${what}`);
    }
    const ids = all.map((request) => request.connectionId);
    assert.equal(new Set(ids).size, ids.length, `duplicate owner: ${what}`);
  }
}

/**
 * Asserts that `holder` alone holds `name`, and that `other` cannot take it.
 *
 * @param holder The client that should hold the lock.
 * @param other Another client of the same server.
 * @param name The lock's name.
 * @throws {assert.AssertionError} When the lock is free or held by another.
 */
export async function assertSoleHolder(
  holder: LockClient,
  other: LockClient,
  name: string,
): Promise<void> {
  assert.equal(await other.tryLock(name), null, `"${name}" is still held`);
  const lock = (await other.status()).locks.find((lock) => lock.name === name);
  assert.ok(lock, `"${name}" is in the status`);
  assert.deepEqual(
    lock.holders.map((request) => request.connectionId),
    [holder.server.connectionId],
  );
}
