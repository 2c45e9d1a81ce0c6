// The lock table when its token source runs dry (a full disk): a request
// whose turn comes stays at the head of its queue, and resume() grants it
// once tokens can be had again.
import assert from "node:assert/strict";
import { type LockRequest, LockTable } from "./lock_table.ts";

type Request = LockRequest<string, string>;

/** A token source that issues `left` more tokens, then throws. */
class Tokens {
  left = Infinity;
  #last = 0;

  next(): number {
    if (this.left <= 0) throw new Error("No token available");
    this.left--;
    return ++this.#last;
  }
}

/**
 * A test with no permissions (the table is pure), given a table whose tokens
 * come from `tokens`.
 */
function test(
  name: string,
  fn: (tokens: Tokens, table: LockTable<string, string>) => void,
): void {
  Deno.test({
    name,
    permissions: "none",
    fn() {
      const tokens = new Tokens();
      fn(tokens, new LockTable({ nextToken: () => tokens.next() }));
    },
  });
}

function owners(requests: readonly Request[]): string[] {
  return requests.map((request) => request.owner);
}

test(
  "a waiter whose turn comes while no token can be had stays at the head, and resume() grants it once one can",
  (tokens, table) => {
    table.acquire("a", "x", "exclusive", "a");
    table.acquire("b", "x", "exclusive", "b");
    table.acquire("c", "x", "exclusive", "c");
    tokens.left = 0;
    const granted: Request[] = [];
    table.release("a", "x", granted);
    assert.equal(granted.length, 0);
    assert.deepEqual(owners(table.inspect("x")!.waiters), ["b", "c"]);
    assert.deepEqual(table.inspect("x")!.holders, []);
    // Nobody jumps the queue: a new request waits behind, a try is busy.
    assert.equal(table.acquire("d", "x", "exclusive", "d", false), "busy");
    const queued = table.acquire("d", "x", "exclusive", "d");
    assert.ok(typeof queued !== "string" && !queued.held);
    // Still no token: resume() leaves it waiting, and it is tried again.
    table.resume(granted);
    assert.equal(granted.length, 0);
    tokens.left = Infinity;
    table.resume(granted);
    assert.deepEqual(owners(granted), ["b"]);
    assert.deepEqual(granted.map((request) => request.token), [2]);
    assert.ok(granted[0]!.held);
    // Once granted, the lock is an ordinary one again.
    granted.length = 0;
    table.resume(granted);
    assert.equal(granted.length, 0);
    table.release("b", "x", granted);
    assert.deepEqual(owners(granted), ["c"]);
  },
);

test(
  "a shared run stops at the first waiter no token can be had for, and resume() grants the rest of it",
  (tokens, table) => {
    table.acquire("a", "s", "exclusive", "a");
    for (const owner of ["b", "c", "d"]) {
      table.acquire(owner, "s", "shared", owner);
    }
    table.acquire("e", "s", "exclusive", "e");
    tokens.left = 1;
    const granted: Request[] = [];
    table.release("a", "s", granted);
    assert.deepEqual(owners(granted), ["b"]);
    assert.deepEqual(owners(table.inspect("s")!.waiters), ["c", "d", "e"]);
    tokens.left = Infinity;
    table.resume(granted);
    assert.deepEqual(owners(granted), ["b", "c", "d"]);
    assert.deepEqual(owners(table.inspect("s")!.waiters), ["e"]);
  },
);

test(
  "a lock whose stalled waiters all left is gone, and resume() grants nothing for it",
  (tokens, table) => {
    table.acquire("a", "x", "exclusive", "a");
    const waiting = table.acquire("b", "x", "exclusive", "b");
    assert.ok(typeof waiting !== "string");
    tokens.left = 0;
    const granted: Request[] = [];
    table.releaseAll("a", granted);
    assert.ok(table.withdraw(waiting, granted));
    assert.equal(table.size, 0);
    tokens.left = Infinity;
    table.resume(granted);
    assert.equal(granted.length, 0);
    assert.equal(table.size, 0);
  },
);

test(
  "a request that would be granted at once while no token can be had changes nothing and throws",
  (tokens, table) => {
    tokens.left = 0;
    assert.throws(
      () => table.acquire("a", "x", "exclusive", "a"),
      /No token available/,
    );
    assert.equal(table.size, 0);
    assert.equal(table.countOf("a"), 0);
  },
);
