// The deadlock check of LockTable.acquire: right against a reference built
// from the table's public state, and linear in the wait-for graph, so that
// long queues cost each request a walk of the graph, not its square.
import assert from "node:assert/strict";
import fc from "fast-check";
import type { SearchCounter } from "./deadlock.ts";
import { type LockMode, type LockRequest, LockTable } from "./lock_table.ts";

type Table = LockTable<number, string>;

function newTable(): Table {
  return new LockTable<number, string>();
}

function conflicts(a: LockMode, b: LockMode): boolean {
  return a === "exclusive" || b === "exclusive";
}

/**
 * The reference: whether `owner`, queued at the tail of `name` in `mode`,
 * would wait for itself. The wait-for graph is built whole from `inspect()`:
 * a waiting request waits for the conflicting holders of its lock and the
 * conflicting requests ahead of it in the queue.
 */
function referenceDeadlock(
  table: Table,
  owner: number,
  name: string,
  mode: LockMode,
): boolean {
  const edges = new Map<number, number[]>();
  const add = (from: number, to: number) => {
    edges.set(from, [...(edges.get(from) ?? []), to]);
  };
  for (const lockName of [...table.names()]) {
    const { holders, waiters } = table.inspect(lockName)!;
    const queue: Pick<LockRequest<number, string>, "owner" | "mode">[] =
      lockName === name ? [...waiters, { owner, mode }] : waiters;
    queue.forEach((waiter, i) => {
      for (const other of [...holders, ...queue.slice(0, i)]) {
        if (conflicts(waiter.mode, other.mode)) add(waiter.owner, other.owner);
      }
    });
  }
  if (!table.inspect(name)) return false;
  const reached = new Set<number>();
  const stack = [...(edges.get(owner) ?? [])];
  while (stack.length > 0) {
    const next = stack.pop()!;
    if (next === owner) return true;
    if (reached.has(next)) continue;
    reached.add(next);
    stack.push(...(edges.get(next) ?? []));
  }
  return false;
}

/** Whether a request would be granted at once, by the documented rule. */
function grantableNow(table: Table, name: string, mode: LockMode): boolean {
  const state = table.inspect(name);
  return state === null ||
    (state.waiters.length === 0 &&
      (state.holders.length === 0 ||
        (mode === "shared" && state.mode === "shared")));
}

Deno.test({
  name:
    "acquire() refuses with deadlock exactly when the reference wait-for graph has a cycle through the requester (property)",
  permissions: "none",
  fn() {
    const operation = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          kind: fc.constant("acquire" as const),
          owner: fc.integer({ min: 0, max: 7 }),
          name: fc.constantFrom("a", "b", "c"),
          mode: fc.constantFrom<LockMode>("exclusive", "shared"),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant("release" as const),
          owner: fc.integer({ min: 0, max: 7 }),
          name: fc.constantFrom("a", "b", "c"),
        }),
      },
    );
    let deadlocks = 0;
    fc.assert(
      fc.property(
        fc.array(operation, { minLength: 20, maxLength: 80 }),
        (operations) => {
          const table = newTable();
          for (const op of operations) {
            if (op.kind === "release") {
              table.release(op.owner, op.name, []);
              continue;
            }
            const asked = table.requestsOf(op.owner).some((request) =>
              request.name === op.name
            );
            const expected = !asked && !grantableNow(table, op.name, op.mode) &&
              referenceDeadlock(table, op.owner, op.name, op.mode);
            const result = table.acquire(op.owner, op.name, op.mode, "t");
            assert.equal(result === "deadlock", expected, JSON.stringify(op));
            if (expected) deadlocks++;
          }
        },
      ),
      { numRuns: 400 },
    );
    // The property is not vacuous: the runs closed cycles often.
    assert.ok(deadlocks > 500, `${deadlocks} deadlocks`);
  },
});

Deno.test({
  name:
    "acquire() finds a cycle through a request ahead in the queue, in either mode, and none through a shared request ahead of a shared one",
  permissions: "none",
  fn() {
    const table = newTable();
    table.acquire(0, "x", "exclusive", "t");
    table.acquire(1, "y", "exclusive", "t");
    table.acquire(1, "x", "shared", "t"); // 1 waits for 0
    table.acquire(2, "z", "exclusive", "t");
    table.acquire(2, "x", "shared", "t"); // 2 waits for 0, not for 1
    // 0 asking for z waits for 2, which waits for 0.
    assert.equal(table.acquire(0, "z", "shared", "t"), "deadlock");
    // 2 asking for y: 1 holds y and waits for 0 only; no cycle through 2.
    const waiting = table.acquire(2, "y", "shared", "t");
    assert.ok(typeof waiting !== "string" && !waiting.held);
    // 0 asking for y waits for 1 (holder) and 2 (ahead, shared vs exclusive).
    assert.equal(table.acquire(0, "y", "exclusive", "t"), "deadlock");
  },
});

/** A request in the reference reduction. */
interface Held {
  owner: number;
  mode: LockMode;
}

/**
 * The reference of the semaphore case, by brute force over the whole table:
 * with the request queued at the tail of `name`, owners that wait for nothing
 * finish and free all they hold, the queues grant what then fits, first in
 * line first, and so on until nothing moves. Deadlocked: never freed.
 */
function referenceReduction(
  table: Table,
  owner: number,
  name: string,
  mode: LockMode,
  limit: number,
): boolean {
  const locks = [...table.names()].map((lockName) => {
    const state = table.inspect(lockName)!;
    const waiters: Held[] = state.waiters.map((w) => ({ ...w }));
    const mine = lockName === name;
    if (mine) waiters.push({ owner, mode });
    return {
      limit: mine && mode === "shared" ? limit : state.limit,
      holders: state.holders.map((h): Held => ({ ...h })),
      waiters,
    };
  });
  const fits = (lock: (typeof locks)[number], request: Held) =>
    lock.holders.length === 0 ||
    (request.mode === "shared" &&
      lock.holders.every((h) => h.mode === "shared") &&
      lock.holders.length < lock.limit);
  const freed = new Set<number>();
  for (let moved = true; moved;) {
    moved = false;
    const waiting = new Set(
      locks.flatMap((lock) => lock.waiters.map((w) => w.owner)),
    );
    for (const lock of locks) {
      for (const h of lock.holders) {
        if (!waiting.has(h.owner) && !freed.has(h.owner)) freed.add(h.owner);
      }
    }
    for (const lock of locks) {
      const before = lock.holders.length + lock.waiters.length;
      lock.holders = lock.holders.filter((h) => !freed.has(h.owner));
      while (lock.waiters.length > 0 && fits(lock, lock.waiters[0]!)) {
        lock.holders.push(lock.waiters.shift()!);
      }
      if (lock.holders.length + lock.waiters.length !== before) moved = true;
      else if (lock.waiters.length > 0 && fits(lock, lock.waiters[0]!)) {
        moved = true;
      }
    }
  }
  const stillWaiting = locks.some((lock) =>
    lock.waiters.some((w) => w.owner === owner)
  );
  return stillWaiting;
}

/** Whether `owner` reaches itself in the wait-for graph, limits counted. */
function referenceCycle(
  table: Table,
  owner: number,
  name: string,
  mode: LockMode,
): boolean {
  const edges = new Map<number, number[]>();
  for (const lockName of [...table.names()]) {
    const { holders, waiters, limit } = table.inspect(lockName)!;
    const queue: Held[] = lockName === name
      ? [...waiters, { owner, mode }]
      : waiters;
    queue.forEach((waiter, i) => {
      for (const other of [...holders, ...queue.slice(0, i)]) {
        if (conflicts(waiter.mode, other.mode) || limit !== Infinity) {
          edges.set(waiter.owner, [
            ...(edges.get(waiter.owner) ?? []),
            other.owner,
          ]);
        }
      }
    });
  }
  const reached = new Set<number>();
  const stack = [...(edges.get(owner) ?? [])];
  while (stack.length > 0) {
    const next = stack.pop()!;
    if (next === owner) return true;
    if (reached.has(next)) continue;
    reached.add(next);
    stack.push(...(edges.get(next) ?? []));
  }
  return false;
}

/** The limit every shared request for a name asks for in the property. */
const LIMITS: Record<string, number> = { a: 2, b: 3, c: Infinity, d: 1 };

Deno.test({
  name:
    "acquire() with limits refuses with deadlock exactly when the brute-force reduction never frees the requester (property)",
  permissions: "none",
  fn() {
    const operation = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          kind: fc.constant("acquire" as const),
          owner: fc.integer({ min: 0, max: 6 }),
          name: fc.constantFrom("a", "b", "c", "d"),
          mode: fc.constantFrom<LockMode>("exclusive", "shared", "shared"),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant("release" as const),
          owner: fc.integer({ min: 0, max: 6 }),
          name: fc.constantFrom("a", "b", "c", "d"),
        }),
      },
    );
    let deadlocks = 0;
    let cyclesThatFree = 0;
    fc.assert(
      fc.property(
        fc.array(operation, { minLength: 20, maxLength: 80 }),
        (operations) => {
          const table = newTable();
          for (const op of operations) {
            if (op.kind === "release") {
              table.release(op.owner, op.name, []);
              continue;
            }
            const limit = LIMITS[op.name]!;
            const asked = table.requestsOf(op.owner).some((request) =>
              request.name === op.name
            );
            const waits = !asked &&
              !grantableWithin(table, op.name, op.mode, limit);
            const expected = waits &&
              referenceReduction(table, op.owner, op.name, op.mode, limit);
            if (
              waits && !expected &&
              referenceCycle(table, op.owner, op.name, op.mode)
            ) {
              cyclesThatFree++;
            }
            const result = table.acquire(
              op.owner,
              op.name,
              op.mode,
              "t",
              true,
              limit,
            );
            assert.equal(result === "deadlock", expected, JSON.stringify(op));
            if (expected) deadlocks++;
          }
        },
      ),
      { numRuns: 400 },
    );
    // Not vacuous: real deadlocks, and cycles a free slot breaks, both often.
    assert.ok(deadlocks > 300, `${deadlocks} deadlocks`);
    assert.ok(cyclesThatFree > 100, `${cyclesThatFree} cycles that free`);
  },
});

/** Whether a request would be granted at once, limits counted. */
function grantableWithin(
  table: Table,
  name: string,
  mode: LockMode,
  limit: number,
): boolean {
  const state = table.inspect(name);
  return state === null ||
    (state.waiters.length === 0 &&
      (state.holders.length === 0 ||
        (mode === "shared" && state.mode === "shared" &&
          state.holders.length < limit)));
}

Deno.test({
  name:
    "a cycle through a semaphore is not refused while a holder outside it can free a slot, and is once that holder waits too",
  permissions: "none",
  fn() {
    const table = newTable();
    // 1 and 3 hold two of "s"'s two slots; 2 holds "x", which 1 waits for.
    table.acquire(1, "s", "shared", "t", true, 2);
    table.acquire(3, "s", "shared", "t", true, 2);
    table.acquire(2, "x", "exclusive", "t");
    table.acquire(1, "x", "exclusive", "t");
    // 2 waiting for "s" closes the cycle 2 -> 1 -> 2, but 3 waits for
    // nothing and will free its slot: not a deadlock.
    const waiting = table.acquire(2, "s", "shared", "t", true, 2);
    assert.ok(typeof waiting !== "string" && !waiting.held, String(waiting));
    // Once 3 waits for "x" too, nobody outside the cycle is left to free a
    // slot: every one of them would wait for ever.
    assert.equal(table.acquire(3, "x", "exclusive", "t"), "deadlock");
    // The refusal left everything as it was: 3 releasing lets 2 in.
    const granted: LockRequest<number, string>[] = [];
    table.release(3, "s", granted);
    assert.deepEqual(granted.map((request) => request.owner), [2]);
  },
});

Deno.test({
  name:
    "a request is refused when every holder of the semaphore it waits for waits for its owner",
  permissions: "none",
  fn() {
    const table = newTable();
    table.acquire(1, "s", "shared", "t", true, 2);
    table.acquire(2, "s", "shared", "t", true, 2);
    table.acquire(3, "x", "exclusive", "t");
    table.acquire(1, "x", "shared", "t");
    table.acquire(2, "x", "shared", "t");
    assert.equal(table.acquire(3, "s", "shared", "t", true, 2), "deadlock");
    assert.equal(table.acquire(3, "s", "exclusive", "t"), "deadlock");
    // With a third slot, 3 is granted at once: no wait, no search.
    const other = newTable();
    other.acquire(1, "s", "shared", "t", true, 3);
    other.acquire(2, "s", "shared", "t", true, 3);
    other.acquire(3, "x", "exclusive", "t");
    other.acquire(1, "x", "shared", "t");
    const held = other.acquire(3, "s", "shared", "t", true, 3);
    assert.ok(typeof held !== "string" && held.held);
  },
});

Deno.test({
  name:
    "a semaphore of one slot held inside a cycle is a deadlock, even with a waiter behind it that holds nothing",
  permissions: "none",
  fn() {
    const table = newTable();
    table.acquire(1, "s", "shared", "t", true, 1);
    table.acquire(2, "y", "exclusive", "t");
    table.acquire(2, "s", "shared", "t", true, 1); // 2 waits for 1
    // 3 holds nothing: it queues behind 2 without a search, and frees no slot.
    table.acquire(3, "s", "shared", "t", true, 1);
    // 1 waiting for y (held by 2) closes 1 -> 2 -> 1; the only slot is 1's.
    assert.equal(table.acquire(1, "y", "exclusive", "t"), "deadlock");
    // A lock held by an owner that waits for nothing is no deadlock.
    table.acquire(4, "w", "exclusive", "t");
    const queued = table.acquire(1, "w", "exclusive", "t");
    assert.ok(typeof queued !== "string" && !queued.held, String(queued));
  },
});

/**
 * The most requests one check may look at per request in the table: each
 * request is looked at a bounded number of times (an owner's requests when
 * it is reached and when the reduction counts them, a queue entry when a walk
 * passes it and when the reduction grants it): 4 at most today, 6 with room.
 * A search that rewalks a queue per entry looks at some n^2 / 2 of them. The
 * count is the same on any machine, however loaded.
 */
const VISITS_PER_REQUEST = 6;

/** A table whose deadlock checks count their work into `counter`. */
function countedTable(): { table: Table; counter: SearchCounter } {
  const counter: SearchCounter = { visited: 0 };
  return { table: new LockTable({ searchCounter: counter }), counter };
}

/**
 * Asks for a lock and fails when the check looked at more than
 * {@linkcode VISITS_PER_REQUEST} times `requests`, the number of requests in
 * the table with this one.
 */
function checkedAcquire(
  table: Table,
  counter: SearchCounter,
  requests: number,
  request: Parameters<Table["acquire"]>,
): ReturnType<Table["acquire"]> {
  counter.visited = 0;
  const result = table.acquire(...request);
  assert.ok(
    counter.visited <= VISITS_PER_REQUEST * requests,
    `owner ${
      request[0]
    }: the check looked at ${counter.visited} requests, with ${requests} in the table`,
  );
  return result;
}

/**
 * Queues `waiters` owners for lock "queue", held by owner 0; with `holding`,
 * each first takes a lock of its own, so each request runs the search, whose
 * work is bounded as it goes: the old search was cubic here.
 */
function buildQueue(
  table: Table,
  counter: SearchCounter,
  waiters: number,
  holding: boolean,
): void {
  table.acquire(0, "queue", "exclusive", "t");
  for (let owner = 1; owner <= waiters; owner++) {
    if (holding) table.acquire(owner, `own-${owner}`, "exclusive", "t");
    const requests = holding ? 1 + 2 * owner : 1 + owner;
    const result = checkedAcquire(table, counter, requests, [
      owner,
      "queue",
      "exclusive",
      "t",
    ]);
    assert.ok(typeof result !== "string", `owner ${owner}: ${result}`);
  }
}

Deno.test({
  name:
    "4,000 waiters that each hold a lock queue, and 30 more requests are checked, each check looking at a number of requests linear in the table",
  permissions: "none",
  fn() {
    const { table, counter } = countedTable();
    buildQueue(table, counter, 4_000, true);
    for (let owner = 4_001; owner <= 4_030; owner++) {
      table.acquire(owner, `own-${owner}`, "exclusive", "t");
      const result = checkedAcquire(table, counter, 1 + 2 * owner, [
        owner,
        "queue",
        "shared",
        "t",
      ]);
      assert.ok(typeof result !== "string" && !result.held, String(result));
      // The walk of the queue really happened: every waiter ahead was seen.
      assert.ok(counter.visited >= owner, `only ${counter.visited} looked at`);
    }
    // And the check still sees a cycle at the far end of the queue.
    assert.equal(
      checkedAcquire(table, counter, 2 + 2 * 4_030, [
        0,
        "own-4000",
        "exclusive",
        "t",
      ]),
      "deadlock",
    );
  },
});

Deno.test({
  name:
    "a request behind 20,000 waiters is checked for deadlock without running out of memory",
  permissions: "none",
  fn() {
    const { table, counter } = countedTable();
    // Waiters that hold nothing are queued without a search.
    buildQueue(table, counter, 20_000, false);
    assert.equal(counter.visited, 0);
    table.acquire(20_001, "mine", "exclusive", "t");
    // The old search queued every waiter once per waiter behind it: 2 * 10^8
    // owners, past V8's largest array.
    const result = checkedAcquire(table, counter, 20_003, [
      20_001,
      "queue",
      "exclusive",
      "t",
    ]);
    assert.ok(typeof result !== "string" && !result.held);
    assert.equal(
      checkedAcquire(table, counter, 20_004, [0, "mine", "exclusive", "t"]),
      "deadlock",
    );
  },
});

Deno.test({
  name:
    "a reduction through 20,000 semaphore waiters that each hold a lock looks at a number of requests linear in them, and finds the deadlock once the free slot's holder waits too",
  permissions: "none",
  fn() {
    const { table, counter } = countedTable();
    const waiters = 20_000;
    // 0 and -1 hold the two slots. Each waiter queues for a slot while it
    // holds nothing (no search), then takes a lock of its own.
    table.acquire(0, "slots", "shared", "t", true, 2);
    table.acquire(-1, "slots", "shared", "t", true, 2);
    for (let owner = 1; owner <= waiters; owner++) {
      const result = table.acquire(owner, "slots", "shared", "t", true, 2);
      assert.ok(typeof result !== "string" && !result.held, String(result));
      table.acquire(owner, `own-${owner}`, "exclusive", "t");
    }
    // 0 waiting for the last waiter's lock closes a cycle through the whole
    // queue, but -1 can release its slot, then each waiter in turn: not a
    // deadlock. A reduction that rescanned the queue per grant would look at
    // some 2 * 10^8 requests here.
    const waiting = checkedAcquire(table, counter, 3 + 2 * waiters, [
      0,
      `own-${waiters}`,
      "exclusive",
      "t",
    ]);
    assert.ok(typeof waiting !== "string" && !waiting.held, String(waiting));
    // The reduction ran: it granted a slot to every waiter in turn.
    assert.ok(counter.visited >= 2 * waiters, `${counter.visited} looked at`);
    // Once -1 waits for it too, nobody can start the chain.
    assert.equal(
      checkedAcquire(table, counter, 4 + 2 * waiters, [
        -1,
        `own-${waiters}`,
        "exclusive",
        "t",
      ]),
      "deadlock",
    );
  },
});

Deno.test({
  name:
    "one owner queueing 10,000 waits behind a holder of them all costs each check a few steps, not the table",
  permissions: "none",
  fn() {
    const { table, counter } = countedTable();
    const n = 10_000;
    for (let i = 0; i < n; i++) {
      table.acquire(1, `n${i}`, "exclusive", "h");
    }
    for (let i = 0; i < n; i++) {
      const request = table.acquire(2, `n${i}`, "exclusive", "w");
      assert.equal(typeof request === "string" ? request : request.held, false);
    }
    // Before, each check walked every request of the waiter and of the
    // holder: some n^2 = 10^8 in all.
    assert.ok(counter.visited <= 4 * n, `looked at ${counter.visited}`);
  },
});
