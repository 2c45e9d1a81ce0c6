// The deadlock check of LockTable.acquire: right against a reference built
// from the table's public state, and linear in the wait-for graph, so that
// long queues cost each request a walk of the graph, not its square.
import assert from "node:assert/strict";
import fc from "fast-check";
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

/**
 * Queues `waiters` owners for lock "queue", held by owner 0; with `holding`,
 * each first takes a lock of its own, so each request runs the search.
 * Returns the milliseconds spent, failing once they pass `budgetMs`: the old
 * search was cubic here, and a bound checked as it goes ends the test soon.
 */
function buildQueue(
  table: Table,
  waiters: number,
  holding: boolean,
  budgetMs: number,
): number {
  const start = performance.now();
  table.acquire(0, "queue", "exclusive", "t");
  for (let owner = 1; owner <= waiters; owner++) {
    if (holding) table.acquire(owner, `own-${owner}`, "exclusive", "t");
    const result = table.acquire(owner, "queue", "exclusive", "t");
    assert.ok(typeof result !== "string", `owner ${owner}: ${result}`);
    const spent = performance.now() - start;
    assert.ok(
      spent < budgetMs,
      `${owner} waiters queued in ${spent.toFixed(0)} ms, over ${budgetMs} ms`,
    );
  }
  return performance.now() - start;
}

Deno.test({
  name:
    "4,000 waiters that each hold a lock queue, and 30 more requests are checked, within a bound the quadratic search misses by far",
  permissions: "none",
  fn() {
    const table = newTable();
    // About 8 M steps of a linear search in all; the old one needed ~10^10.
    buildQueue(table, 4_000, true, 10_000);
    const start = performance.now();
    for (let owner = 4_001; owner <= 4_030; owner++) {
      table.acquire(owner, `own-${owner}`, "exclusive", "t");
      const result = table.acquire(owner, "queue", "shared", "t");
      assert.ok(typeof result !== "string" && !result.held, String(result));
    }
    const spent = performance.now() - start;
    // The old search took ~0.25 s for each of these.
    assert.ok(spent < 1_000, `30 checks took ${spent.toFixed(0)} ms`);
    // And the check still sees a cycle at the far end of the queue.
    assert.equal(table.acquire(0, "own-4000", "exclusive", "t"), "deadlock");
  },
});

Deno.test({
  name:
    "a request behind 20,000 waiters is checked for deadlock without running out of memory",
  permissions: "none",
  fn() {
    const table = newTable();
    // Waiters that hold nothing are queued without a search.
    buildQueue(table, 20_000, false, 10_000);
    table.acquire(20_001, "mine", "exclusive", "t");
    const start = performance.now();
    const result = table.acquire(20_001, "queue", "exclusive", "t");
    const spent = performance.now() - start;
    assert.ok(typeof result !== "string" && !result.held);
    // The old search queued every waiter once per waiter behind it: 2 * 10^8
    // owners, past V8's largest array.
    assert.ok(spent < 1_000, `the check took ${spent.toFixed(0)} ms`);
    assert.equal(table.acquire(0, "mine", "exclusive", "t"), "deadlock");
  },
});
