import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type LockMode,
  type LockRequest,
  type LockState,
  LockTable,
} from "./lock_table.ts";

type Request = LockRequest<string, string>;

/** A test with no permissions at all: the table is pure, and this proves it. */
function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

/**
 * A table that passes the same array to every call that can grant, so a test
 * reads every grant since it began from `grants`.
 */
class RecordingTable<O, T> extends LockTable<O, T> {
  readonly grants: LockRequest<O, T>[] = [];

  override release(
    owner: O,
    name: string,
    granted = this.grants,
  ): LockRequest<O, T> | null {
    return super.release(owner, name, granted);
  }

  override withdraw(
    request: LockRequest<O, T>,
    granted = this.grants,
  ): boolean {
    return super.withdraw(request, granted);
  }

  override releaseAll(owner: O, granted = this.grants): LockRequest<O, T>[] {
    return super.releaseAll(owner, granted);
  }
}

/** A table whose owners and tickets are strings, recording every grant. */
function setup() {
  const table = new RecordingTable<string, string>();
  return { table, grants: table.grants };
}

/** Acquires and insists the request was not refused. */
function request(
  table: LockTable<string, string>,
  owner: string,
  name: string,
  mode: LockMode = "exclusive",
): Request {
  const result = table.acquire(owner, name, mode, `${owner}:${name}`);
  assert.ok(typeof result !== "string", `${owner} was refused: ${result}`);
  return result;
}

function tickets(requests: readonly Request[]): string[] {
  return requests.map((entry) => entry.ticket);
}

/** A lock's holders and waiters as tickets, or null when it is gone. */
function queue(table: LockTable<string, string>, name: string) {
  const state = table.inspect(name);
  if (state === null) return null;
  return {
    mode: state.mode,
    holders: tickets(state.holders),
    waiters: tickets(state.waiters),
  };
}

// acquire

test("acquire() grants a free lock at once and reports it by its return value, not in the grants array", () => {
  const { table, grants } = setup();
  const held = table.acquire("a", "jobs", "exclusive", "t1");
  assert.ok(typeof held !== "string");
  assert.equal(held.owner, "a");
  assert.equal(held.name, "jobs");
  assert.equal(held.mode, "exclusive");
  assert.equal(held.ticket, "t1");
  assert.equal(held.held, true);
  assert.equal(held.token, 1);
  assert.deepEqual(grants, []);
  assert.deepEqual(queue(table, "jobs"), {
    mode: "exclusive",
    holders: ["t1"],
    waiters: [],
  });
});

test("acquire() queues exclusive requests and grants them in FIFO order among three owners", () => {
  const { table, grants } = setup();
  const a = request(table, "a", "jobs");
  const b = request(table, "b", "jobs");
  const c = request(table, "c", "jobs");
  const d = request(table, "d", "jobs");
  for (const waiting of [b, c, d]) {
    assert.equal(waiting.held, false);
    assert.equal(waiting.token, 0);
  }
  assert.deepEqual(queue(table, "jobs")?.waiters, [
    "b:jobs",
    "c:jobs",
    "d:jobs",
  ]);

  table.release("a", "jobs");
  assert.deepEqual(grants, [b]);
  table.release("b", "jobs");
  assert.deepEqual(grants, [b, c]);
  table.release("c", "jobs");
  assert.deepEqual(grants, [b, c, d]);
  assert.deepEqual([a, b, c, d].map((entry) => entry.token), [1, 2, 3, 4]);
  assert.ok([b, c, d].every((entry) => entry.held));
});

test("release() pushes the request it grants into the caller's array, already held", () => {
  const table = new LockTable<string, string>();
  request(table, "a", "jobs");
  const b = request(table, "b", "jobs");
  const granted: Request[] = [];
  table.release("a", "jobs", granted);
  assert.deepEqual(
    granted.map(({ ticket, held, token }) => ({ ticket, held, token })),
    [{ ticket: "b:jobs", held: true, token: 2 }],
  );
  assert.equal(granted[0], b);
  assert.deepEqual(queue(table, "jobs")?.holders, ["b:jobs"]);
});

test("acquire() refuses an owner's second request for the same lock with already_held or already_waiting", () => {
  const { table, grants } = setup();
  request(table, "a", "jobs");
  request(table, "b", "jobs");
  const before = queue(table, "jobs");
  for (const mode of ["exclusive", "shared"] as const) {
    for (const wait of [true, false]) {
      assert.equal(
        table.acquire("a", "jobs", mode, "again", wait),
        "already_held",
      );
      assert.equal(
        table.acquire("b", "jobs", mode, "again", wait),
        "already_waiting",
      );
    }
  }
  assert.deepEqual(queue(table, "jobs"), before);
  assert.deepEqual(tickets(table.requestsOf("a")), ["a:jobs"]);
  assert.deepEqual(tickets(table.requestsOf("b")), ["b:jobs"]);
  // Other locks and other owners are unaffected.
  assert.equal(request(table, "a", "other").held, true);
  assert.equal(request(table, "c", "jobs").held, false);
  assert.deepEqual(grants, []);
});

test("acquire() refuses already_held for a shared holder asking again", () => {
  const { table } = setup();
  request(table, "a", "jobs", "shared");
  assert.equal(table.acquire("a", "jobs", "shared", "again"), "already_held");
  assert.deepEqual(queue(table, "jobs")?.holders, ["a:jobs"]);
});

test("acquire() with wait=false answers busy only when the request cannot be granted now", () => {
  const { table } = setup();
  // Free: granted.
  const first = table.acquire("a", "x", "exclusive", "a1", false);
  assert.ok(typeof first !== "string" && first.held);
  // Held exclusively: busy for either mode.
  assert.equal(table.acquire("b", "x", "exclusive", "b1", false), "busy");
  assert.equal(table.acquire("b", "x", "shared", "b1", false), "busy");

  // Held shared with nobody waiting: shared is granted, exclusive is busy.
  request(table, "a", "y", "shared");
  const joined = table.acquire("b", "y", "shared", "b2", false);
  assert.ok(typeof joined !== "string" && joined.held);
  assert.equal(table.acquire("c", "y", "exclusive", "c1", false), "busy");

  // Held shared with an exclusive waiting: shared is busy too.
  request(table, "c", "y", "exclusive");
  assert.equal(table.acquire("d", "y", "shared", "d1", false), "busy");
  assert.deepEqual(queue(table, "y"), {
    mode: "shared",
    holders: ["a:y", "b2"],
    waiters: ["c:y"],
  });
});

test("A busy refusal leaves no trace in the table", () => {
  const { table, grants } = setup();
  request(table, "a", "x");
  const before = queue(table, "x");
  assert.equal(table.acquire("b", "x", "exclusive", "b1", false), "busy");
  assert.deepEqual(queue(table, "x"), before);
  assert.deepEqual(table.requestsOf("b"), []);
  assert.equal(table.release("b", "x"), null);
  assert.deepEqual(table.releaseAll("b"), []);
  assert.equal(table.size, 1);
  table.release("a", "x");
  assert.deepEqual(grants, []);
  assert.equal(table.size, 0);
});

test("Owners are compared by identity, so equal-looking objects are different owners", () => {
  const table = new RecordingTable<object, number>();
  const grants = table.grants;
  const one = {}, two = {};
  assert.ok(typeof table.acquire(one, "x", "exclusive", 1) !== "string");
  const second = table.acquire(two, "x", "exclusive", 2);
  assert.ok(typeof second !== "string" && !second.held);
  assert.equal(table.acquire(one, "x", "exclusive", 3), "already_held");
  table.release(one, "x");
  assert.deepEqual(grants.map((granted) => granted.ticket), [2]);
});

// release and withdraw

test("release() returns the removed request, or null when the owner has none on that lock", () => {
  const { table } = setup();
  const a = request(table, "a", "x");
  assert.equal(table.release("z", "x"), null);
  assert.equal(table.release("a", "y"), null);
  assert.equal(table.release("a", "x"), a);
  assert.equal(table.release("a", "x"), null);
  assert.equal(table.size, 0);
});

test("release() of a waiting request withdraws it from the middle, tail or head of the queue", () => {
  const { table, grants } = setup();
  request(table, "a", "x");
  for (const owner of ["b", "c", "d", "e"]) request(table, owner, "x");

  assert.equal(table.release("c", "x")?.ticket, "c:x"); // middle
  assert.deepEqual(queue(table, "x")?.waiters, ["b:x", "d:x", "e:x"]);
  assert.equal(table.release("e", "x")?.ticket, "e:x"); // tail
  assert.deepEqual(queue(table, "x")?.waiters, ["b:x", "d:x"]);
  request(table, "f", "x"); // the new tail follows d
  assert.deepEqual(queue(table, "x")?.waiters, ["b:x", "d:x", "f:x"]);
  assert.equal(table.release("b", "x")?.ticket, "b:x"); // head
  assert.deepEqual(queue(table, "x")?.waiters, ["d:x", "f:x"]);
  assert.deepEqual(
    grants,
    [],
    "withdrawing behind an exclusive holder grants nothing",
  );

  table.release("a", "x");
  assert.deepEqual(tickets(grants), ["d:x"]);
  table.release("d", "x");
  assert.deepEqual(tickets(grants), ["d:x", "f:x"]);
  table.release("f", "x");
  assert.equal(table.inspect("x"), null);
});

test("release() of the only waiter empties the queue, which then fills again in order", () => {
  const { table, grants } = setup();
  request(table, "a", "x");
  request(table, "b", "x");
  table.release("b", "x");
  assert.deepEqual(queue(table, "x")?.waiters, []);
  request(table, "c", "x");
  request(table, "d", "x");
  assert.deepEqual(queue(table, "x")?.waiters, ["c:x", "d:x"]);
  table.release("a", "x");
  table.release("c", "x");
  assert.deepEqual(tickets(grants), ["c:x", "d:x"]);
});

test("withdraw() removes a waiting request and returns true", () => {
  const { table, grants } = setup();
  request(table, "a", "x");
  const b = request(table, "b", "x");
  request(table, "c", "x");
  assert.equal(table.withdraw(b), true);
  assert.deepEqual(queue(table, "x")?.waiters, ["c:x"]);
  assert.deepEqual(table.requestsOf("b"), []);
  table.release("a", "x");
  assert.deepEqual(tickets(grants), ["c:x"]);
});

test("withdraw() does nothing to a held request and returns false", () => {
  const { table } = setup();
  const a = request(table, "a", "x");
  request(table, "b", "x");
  assert.equal(table.withdraw(a), false);
  assert.deepEqual(queue(table, "x"), {
    mode: "exclusive",
    holders: ["a:x"],
    waiters: ["b:x"],
  });
});

test("withdraw() returns false for a request that is gone or was granted meanwhile", () => {
  const { table } = setup();
  request(table, "a", "x");
  const b = request(table, "b", "x");
  assert.equal(table.withdraw(b), true);
  assert.equal(table.withdraw(b), false);

  const c = request(table, "c", "x");
  table.release("a", "x");
  assert.equal(c.held, true);
  assert.equal(table.withdraw(c), false);
  assert.deepEqual(queue(table, "x")?.holders, ["c:x"]);
});

test("withdraw() of a stale request leaves the owner's newer request on the same lock alone", () => {
  const { table } = setup();
  request(table, "a", "x");
  const old = request(table, "b", "x");
  table.release("b", "x");
  const fresh = request(table, "b", "x");
  assert.equal(table.withdraw(old), false);
  assert.deepEqual(table.requestsOf("b"), [fresh]);
  assert.deepEqual(queue(table, "x")?.waiters, ["b:x"]);
});

test("withdraw() of an exclusive waiter lets the shared waiters behind it join the shared holders", () => {
  const { table, grants } = setup();
  request(table, "a", "x", "shared");
  const b = request(table, "b", "x", "exclusive");
  request(table, "c", "x", "shared");
  request(table, "d", "x", "shared");
  request(table, "e", "x", "exclusive");
  assert.deepEqual(grants, []);
  assert.equal(table.withdraw(b), true);
  assert.deepEqual(tickets(grants), ["c:x", "d:x"]);
  assert.deepEqual(queue(table, "x"), {
    mode: "shared",
    holders: ["a:x", "c:x", "d:x"],
    waiters: ["e:x"],
  });
});

// releaseAll

test("releaseAll() releases an owner's holds and waits, grants the next waiters and touches nobody else", () => {
  const { table, grants } = setup();
  request(table, "a", "x"); // a holds x
  request(table, "b", "y"); // b holds y
  request(table, "a", "y"); // a waits for y
  request(table, "a", "z", "shared"); // a holds z
  request(table, "c", "z", "exclusive"); // c waits for z
  request(table, "d", "x"); // d waits for x
  request(table, "e", "y"); // e waits for y, behind a
  request(table, "f", "w"); // f holds w, unrelated
  const others = ["b", "c", "d", "e", "f"].map((owner) =>
    table.requestsOf(owner)
  );
  const w = queue(table, "w");

  const removed = table.releaseAll("a");
  assert.deepEqual(tickets(removed), ["a:x", "a:y", "a:z"]);
  assert.deepEqual(tickets(grants), ["d:x", "c:z"]);
  assert.deepEqual(queue(table, "x"), {
    mode: "exclusive",
    holders: ["d:x"],
    waiters: [],
  });
  assert.deepEqual(queue(table, "y"), {
    mode: "exclusive",
    holders: ["b:y"],
    waiters: ["e:y"],
  });
  assert.deepEqual(queue(table, "z"), {
    mode: "exclusive",
    holders: ["c:z"],
    waiters: [],
  });
  assert.deepEqual(queue(table, "w"), w);
  assert.deepEqual(table.requestsOf("a"), []);
  assert.deepEqual(
    ["b", "c", "d", "e", "f"].map((owner) => table.requestsOf(owner)),
    others,
  );
  assert.deepEqual(table.releaseAll("a"), []);
});

test("releaseAll() removes the locks only that owner used", () => {
  const { table } = setup();
  request(table, "a", "x");
  request(table, "a", "y", "shared");
  request(table, "b", "y", "shared");
  table.releaseAll("a");
  assert.deepEqual([...table.names()], ["y"]);
  assert.equal(table.size, 1);
});

test("releaseAll() of an unknown owner returns nothing and grants nothing", () => {
  const { table, grants } = setup();
  request(table, "a", "x");
  request(table, "b", "x");
  assert.deepEqual(table.releaseAll("nobody"), []);
  assert.deepEqual(grants, []);
  assert.deepEqual(queue(table, "x"), {
    mode: "exclusive",
    holders: ["a:x"],
    waiters: ["b:x"],
  });
});

// Shared and exclusive

test("Many shared requests hold a lock together, in grant order", () => {
  const { table, grants } = setup();
  const holders = ["a", "b", "c", "d", "e"].map((owner) =>
    request(table, owner, "x", "shared")
  );
  assert.ok(holders.every((holder) => holder.held));
  assert.deepEqual(holders.map((holder) => holder.token), [1, 2, 3, 4, 5]);
  assert.deepEqual(queue(table, "x"), {
    mode: "shared",
    holders: ["a:x", "b:x", "c:x", "d:x", "e:x"],
    waiters: [],
  });
  assert.deepEqual(grants, []);
});

test("An exclusive request waits for every shared holder and is granted when the last one releases", () => {
  const { table, grants } = setup();
  for (const owner of ["a", "b", "c"]) request(table, owner, "x", "shared");
  const d = request(table, "d", "x", "exclusive");
  assert.equal(d.held, false);
  table.release("b", "x");
  table.release("a", "x");
  assert.deepEqual(grants, []);
  assert.equal(d.held, false);
  table.release("c", "x");
  assert.deepEqual(grants, [d]);
  assert.deepEqual(queue(table, "x"), {
    mode: "exclusive",
    holders: ["d:x"],
    waiters: [],
  });
});

test("A shared request behind a queued exclusive waits, so writers do not starve", () => {
  const { table, grants } = setup();
  request(table, "a", "x", "shared");
  request(table, "b", "x", "exclusive");
  const c = request(table, "c", "x", "shared");
  assert.equal(c.held, false);
  assert.deepEqual(queue(table, "x"), {
    mode: "shared",
    holders: ["a:x"],
    waiters: ["b:x", "c:x"],
  });
  table.release("a", "x");
  assert.deepEqual(tickets(grants), ["b:x"]);
  table.release("b", "x");
  assert.deepEqual(tickets(grants), ["b:x", "c:x"]);
});

test("A run of shared waiters at the head is granted together, up to the next exclusive", () => {
  const { table, grants } = setup();
  request(table, "a", "x", "exclusive");
  for (const owner of ["b", "c", "d"]) request(table, owner, "x", "shared");
  request(table, "e", "x", "exclusive");
  request(table, "f", "x", "shared");

  table.release("a", "x");
  assert.deepEqual(tickets(grants), ["b:x", "c:x", "d:x"]);
  assert.deepEqual(grants.map((granted) => granted.token), [2, 3, 4]);
  assert.deepEqual(queue(table, "x"), {
    mode: "shared",
    holders: ["b:x", "c:x", "d:x"],
    waiters: ["e:x", "f:x"],
  });

  table.release("c", "x");
  table.release("b", "x");
  assert.equal(grants.length, 3);
  table.release("d", "x");
  assert.deepEqual(tickets(grants), ["b:x", "c:x", "d:x", "e:x"]);
  table.release("e", "x");
  assert.deepEqual(tickets(grants), ["b:x", "c:x", "d:x", "e:x", "f:x"]);
  assert.deepEqual(queue(table, "x")?.mode, "shared");
});

test("An exclusive at the head is granted alone even with shared waiters behind it", () => {
  const { table, grants } = setup();
  request(table, "a", "x", "shared");
  request(table, "b", "x", "exclusive");
  request(table, "c", "x", "exclusive");
  request(table, "d", "x", "shared");
  table.release("a", "x");
  assert.deepEqual(tickets(grants), ["b:x"]);
  table.release("b", "x");
  assert.deepEqual(tickets(grants), ["b:x", "c:x"]);
  table.release("c", "x");
  assert.deepEqual(tickets(grants), ["b:x", "c:x", "d:x"]);
});

test("A shared request joins the holders again once the queue ahead of it is empty", () => {
  const { table } = setup();
  request(table, "a", "x", "shared");
  request(table, "b", "x", "exclusive");
  table.release("b", "x"); // the exclusive gives up
  assert.equal(request(table, "c", "x", "shared").held, true);
  assert.deepEqual(queue(table, "x")?.holders, ["a:x", "c:x"]);
});

// Tokens

test("Tokens come from nextToken, one per grant and none for waiting requests", () => {
  let next = 100;
  const issued: number[] = [];
  const table = new RecordingTable<string, string>({
    nextToken: () => {
      next += 10;
      issued.push(next);
      return next;
    },
  });
  const a = request(table, "a", "x");
  const b = request(table, "b", "x");
  assert.deepEqual(issued, [110]);
  assert.equal(a.token, 110);
  assert.equal(b.token, 0);
  table.release("a", "x");
  assert.equal(b.token, 120);
  assert.deepEqual(issued, [110, 120]);
});

test("Each table counts its own tokens from 1", () => {
  const first = setup().table;
  const second = setup().table;
  assert.equal(request(first, "a", "x").token, 1);
  assert.equal(request(first, "a", "y").token, 2);
  assert.equal(request(second, "a", "x").token, 1);
});

// Introspection

test("inspect(), names(), size and requestsOf() describe the table", () => {
  const { table } = setup();
  assert.equal(table.inspect("x"), null);
  assert.equal(table.size, 0);
  assert.deepEqual([...table.names()], []);

  const ax = request(table, "a", "x");
  const bx = request(table, "b", "x");
  const ay = request(table, "a", "y", "shared");
  const cz = request(table, "c", "z", "shared");
  const az = request(table, "a", "z", "shared");
  assert.equal(table.size, 3);
  assert.deepEqual([...table.names()].sort(), ["x", "y", "z"]);
  assert.deepEqual(table.requestsOf("a"), [ax, ay, az]);
  assert.deepEqual(table.requestsOf("b"), [bx]);
  assert.deepEqual(table.requestsOf("nobody"), []);

  const x: LockState<string, string> | null = table.inspect("x");
  assert.deepEqual(x, {
    name: "x",
    mode: "exclusive",
    limit: Infinity,
    holders: [ax],
    waiters: [bx],
  });
  assert.deepEqual(table.inspect("z"), {
    name: "z",
    mode: "shared",
    limit: Infinity,
    holders: [cz, az],
    waiters: [],
  });
});

test("requestsOf() lists requests in the order they were made, a re-acquired lock last", () => {
  const { table } = setup();
  request(table, "a", "x");
  request(table, "a", "y");
  request(table, "a", "z");
  table.release("a", "x");
  request(table, "a", "x");
  assert.deepEqual(tickets(table.requestsOf("a")), ["a:y", "a:z", "a:x"]);
});

test("inspect() returns copies: changing them does not change the table", () => {
  const { table } = setup();
  request(table, "a", "x");
  request(table, "b", "x");
  const state = table.inspect("x")!;
  state.holders.length = 0;
  state.waiters.length = 0;
  assert.deepEqual(queue(table, "x"), {
    mode: "exclusive",
    holders: ["a:x"],
    waiters: ["b:x"],
  });
  table.requestsOf("a").length = 0;
  assert.deepEqual(tickets(table.requestsOf("a")), ["a:x"]);
});

test("A lock is removed once nobody holds or waits for it", () => {
  const { table } = setup();
  request(table, "a", "x", "shared");
  request(table, "b", "x", "shared");
  request(table, "c", "x", "exclusive");
  table.release("a", "x");
  table.release("c", "x"); // withdraws the waiter
  assert.equal(table.size, 1);
  table.release("b", "x");
  assert.equal(table.inspect("x"), null);
  assert.equal(table.size, 0);
  assert.deepEqual([...table.names()], []);
  // A new request starts afresh on the same name.
  assert.equal(request(table, "d", "x", "shared").held, true);
});

// Releasing what was just granted

test("a caller may release each grant as it reads it, and the next waiters are still granted", () => {
  const table = new LockTable<string, string>();
  request(table, "a", "x");
  request(table, "b", "x");
  request(table, "c", "x", "shared");
  request(table, "d", "x", "shared");
  request(table, "e", "x");
  const granted: Request[] = [];
  table.release("a", "x", granted);
  for (let i = 0; i < granted.length; i++) {
    table.release(granted[i]!.owner, "x", granted);
  }
  assert.deepEqual(tickets(granted), ["b:x", "c:x", "d:x", "e:x"]);
  assert.equal(table.inspect("x"), null);
  assert.equal(table.size, 0);
});

// Deadlocks

test("acquire() refuses a request that closes a two-party cycle", () => {
  const { table } = setup();
  request(table, "a", "x");
  request(table, "b", "y");
  assert.equal(request(table, "a", "y").held, false);
  assert.equal(table.acquire("b", "x", "exclusive", "b:x"), "deadlock");
  // The refusal changes nothing: b still holds y, a still waits for it.
  assert.deepEqual(queue(table, "y"), {
    mode: "exclusive",
    holders: ["b:y"],
    waiters: ["a:y"],
  });
  assert.deepEqual(queue(table, "x")?.waiters, []);
});

test("acquire() refuses a request that closes a three-party cycle", () => {
  const { table } = setup();
  request(table, "a", "x");
  request(table, "b", "y");
  request(table, "c", "z");
  request(table, "a", "y");
  request(table, "b", "z");
  assert.equal(table.acquire("c", "x", "exclusive", "c:x"), "deadlock");
  assert.equal(table.acquire("c", "x", "shared", "c:x"), "deadlock");
  // Without the cycle, the same wait is fine.
  table.release("a", "y");
  assert.equal(request(table, "c", "x").held, false);
});

test("shared holders wait for nobody among themselves, but an exclusive request does", () => {
  const { table } = setup();
  request(table, "a", "x", "shared");
  request(table, "b", "x", "shared");
  request(table, "c", "y");
  assert.equal(request(table, "a", "y").held, false); // a waits for c
  // c joining the shared holders of x waits for nothing: no cycle.
  assert.equal(request(table, "c", "x", "shared").held, true);
  table.release("c", "x");
  // c asking for x exclusively would wait for a, who waits for c.
  assert.equal(table.acquire("c", "x", "exclusive", "c:x"), "deadlock");
});

test("a request waits for the conflicting requests ahead of it in the queue", () => {
  const { table } = setup();
  request(table, "a", "x");
  request(table, "b", "x"); // b waits for a
  request(table, "c", "y");
  // c queues behind b for x: c waits for a and for b, who waits for a.
  assert.equal(request(table, "c", "x").held, false);
  // Now a asking for y (held by c) would close a -> c -> a.
  assert.equal(table.acquire("a", "y", "exclusive", "a:y"), "deadlock");
  // d, who holds nothing, may queue for y.
  assert.equal(request(table, "d", "y").held, false);
});

test("a shared request behind a queued exclusive one waits for it, and a cycle through it is refused", () => {
  const { table } = setup();
  request(table, "a", "x", "shared");
  request(table, "b", "x"); // exclusive, waits for a
  request(table, "c", "y");
  request(table, "c", "x", "shared"); // waits behind b, so for b (and a)
  assert.equal(table.acquire("b", "y", "exclusive", "b:y"), "deadlock");
  assert.equal(table.acquire("a", "y", "exclusive", "a:y"), "deadlock");
});

// limits

test("A shared request with a limit of 3 is granted while fewer than 3 hold; the next ones wait in FIFO order", () => {
  const { table, grants } = setup();
  const ask = (owner: string) => {
    const result = table.acquire(owner, "jobs", "shared", owner, true, 3);
    assert.ok(typeof result !== "string", `${owner}: ${result}`);
    return result;
  };
  const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(ask);
  assert.deepEqual([a, b, c, d, e].map((entry) => entry!.held), [
    true,
    true,
    true,
    false,
    false,
  ]);
  assert.equal(table.inspect("jobs")?.limit, 3);
  assert.equal(table.acquire("f", "jobs", "shared", "f", false, 3), "busy");
  table.release("b", "jobs");
  assert.deepEqual(tickets(grants), ["d"]);
  table.release("a", "jobs");
  table.release("d", "jobs");
  assert.deepEqual(tickets(grants), ["d", "e"]);
  const tokens = [a, b, c, d, e].map((entry) => entry!.token);
  assert.deepEqual(tokens, [1, 2, 3, 4, 5]);
  assert.deepEqual(queue(table, "jobs"), {
    mode: "shared",
    holders: ["c", "e"],
    waiters: [],
  });
});

test("acquire() refuses limit_mismatch to a shared request whose limit differs from the lock's, and leaves no trace", () => {
  const { table } = setup();
  table.acquire("a", "jobs", "shared", "a", true, 2);
  assert.equal(
    table.acquire("b", "jobs", "shared", "b", true, 3),
    "limit_mismatch",
  );
  // Unbounded is a limit of its own, and is refused as well.
  assert.equal(table.acquire("b", "jobs", "shared", "b"), "limit_mismatch");
  // Mismatch comes before busy: a try-lock learns the same.
  assert.equal(
    table.acquire("b", "jobs", "shared", "b", false, 3),
    "limit_mismatch",
  );
  assert.deepEqual(table.requestsOf("b"), []);
  assert.equal(table.inspect("jobs")?.limit, 2);
});

test("Exclusive requests hold alone whatever the limit, and the limit lasts only while shared requests hold or wait", () => {
  const { table, grants } = setup();
  request(table, "a", "jobs", "exclusive");
  // The first shared request sets the limit, while it waits too.
  table.acquire("b", "jobs", "shared", "b", true, 2);
  assert.equal(table.inspect("jobs")?.limit, 2);
  assert.equal(
    table.acquire("c", "jobs", "shared", "c", true, 5),
    "limit_mismatch",
  );
  const x = request(table, "x", "jobs", "exclusive");
  table.release("b", "jobs");
  // Only exclusive requests are left: no limit.
  assert.equal(table.inspect("jobs")?.limit, Infinity);
  table.acquire("c", "jobs", "shared", "c", true, 5);
  assert.equal(table.inspect("jobs")?.limit, 5);
  table.release("a", "jobs");
  assert.deepEqual(grants, [x]);
  table.release("x", "jobs");
  assert.deepEqual(tickets(grants), ["x:jobs", "c"]);
});

test("An exclusive request waits for every holder of a semaphore, and shared requests behind it wait for it", () => {
  const { table, grants } = setup();
  table.acquire("a", "jobs", "shared", "a", true, 2);
  table.acquire("b", "jobs", "shared", "b", true, 2);
  const x = request(table, "x", "jobs", "exclusive");
  table.acquire("c", "jobs", "shared", "c", true, 2);
  table.acquire("d", "jobs", "shared", "d", true, 2);
  table.release("a", "jobs");
  assert.deepEqual(grants, []);
  table.release("b", "jobs");
  assert.deepEqual(grants, [x]);
  table.release("x", "jobs");
  assert.deepEqual(tickets(grants), ["x:jobs", "c", "d"]);
});

// Model-based property

type Step =
  | {
    kind: "acquire";
    owner: number;
    name: string;
    mode: LockMode;
    wait: boolean;
    limit: number;
  }
  | { kind: "release"; owner: number; name: string }
  | { kind: "releaseAll"; owner: number }
  | { kind: "withdraw"; owner: number; name: string };

interface ModelRequest {
  owner: number;
  name: string;
  mode: LockMode;
  ticket: number;
  limit: number;
}

interface ModelLock {
  holders: ModelRequest[];
  waiters: ModelRequest[];
}

/**
 * The reference: plain arrays and the rules as the documentation states them.
 * Each method returns the tickets it grants, in order.
 */
class Model {
  readonly locks = new Map<string, ModelLock>();
  /** Every live request of each owner, in the order it made them. */
  readonly owners = new Map<number, ModelRequest[]>();

  find(owner: number, name: string): ModelRequest | undefined {
    return this.owners.get(owner)?.find((entry) => entry.name === name);
  }

  held(entry: ModelRequest): boolean {
    return this.locks.get(entry.name)?.holders.includes(entry) ?? false;
  }

  /** A request's limit, as the shared requests of its lock agree on it. */
  static grantable(
    holders: readonly Pick<ModelRequest, "mode">[],
    { mode, limit }: Pick<ModelRequest, "mode" | "limit">,
  ): boolean {
    return holders.length === 0 ||
      (mode === "shared" && holders.length < limit &&
        holders.every((holder) => holder.mode === "shared"));
  }

  /** The limit of the shared requests of a lock, if it has any. */
  static limitOf(lock: ModelLock): number | undefined {
    return [...lock.holders, ...lock.waiters].find((entry) =>
      entry.mode === "shared"
    )?.limit;
  }

  acquire(
    entry: ModelRequest,
    wait: boolean,
  ):
    | "held"
    | "waiting"
    | "busy"
    | "already_held"
    | "already_waiting"
    | "limit_mismatch"
    | "deadlock" {
    const existing = this.find(entry.owner, entry.name);
    if (existing !== undefined) {
      return this.held(existing) ? "already_held" : "already_waiting";
    }
    const lock = this.locks.get(entry.name) ?? { holders: [], waiters: [] };
    const agreed = Model.limitOf(lock);
    if (
      entry.mode === "shared" && agreed !== undefined && agreed !== entry.limit
    ) {
      return "limit_mismatch";
    }
    const now = lock.waiters.length === 0 &&
      Model.grantable(lock.holders, entry);
    if (!now && !wait) return "busy";
    if (!now && this.neverFreed(entry)) return "deadlock";
    this.locks.set(entry.name, lock);
    this.owners.set(entry.owner, [
      ...(this.owners.get(entry.owner) ?? []),
      entry,
    ]);
    (now ? lock.holders : lock.waiters).push(entry);
    return now ? "held" : "waiting";
  }

  /**
   * With the new request queued at the tail, runs the reduction on copies of
   * every queue: owners that wait for nothing finish and free all they hold,
   * each queue grants what then fits, first in line first, until nothing
   * moves. Deadlocked: its owner still waits.
   */
  neverFreed(entry: ModelRequest): boolean {
    const locks = [...this.locks.values()].map((lock) => ({
      holders: [...lock.holders],
      waiters: entry.name === lock.holders[0]?.name
        ? [...lock.waiters, entry]
        : [...lock.waiters],
    }));
    for (let moved = true; moved;) {
      moved = false;
      const waiting = new Set(
        locks.flatMap((lock) => lock.waiters.map((waiter) => waiter.owner)),
      );
      for (const lock of locks) {
        const holders = lock.holders.filter((h) => waiting.has(h.owner));
        const queued = lock.waiters.length;
        while (
          lock.waiters.length > 0 &&
          Model.grantable(holders, lock.waiters[0]!)
        ) {
          holders.push(lock.waiters.shift()!);
        }
        if (holders.length !== lock.holders.length) moved = true;
        if (lock.waiters.length !== queued) moved = true;
        lock.holders = holders;
      }
    }
    return locks.some((lock) => lock.waiters.includes(entry));
  }

  remove(entry: ModelRequest): number[] {
    const own = this.owners.get(entry.owner)!.filter((other) =>
      other !== entry
    );
    if (own.length === 0) this.owners.delete(entry.owner);
    else this.owners.set(entry.owner, own);
    const lock = this.locks.get(entry.name)!;
    lock.holders = lock.holders.filter((other) => other !== entry);
    lock.waiters = lock.waiters.filter((other) => other !== entry);
    const granted: number[] = [];
    while (
      lock.waiters.length > 0 &&
      Model.grantable(lock.holders, lock.waiters[0]!)
    ) {
      const next = lock.waiters.shift()!;
      lock.holders.push(next);
      granted.push(next.ticket);
    }
    if (lock.holders.length === 0 && lock.waiters.length === 0) {
      this.locks.delete(entry.name);
    }
    return granted;
  }
}

const stepArbitrary: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("acquire" as const),
      owner: fc.integer({ min: 0, max: 4 }),
      name: fc.constantFrom("a", "b", "c"),
      mode: fc.constantFrom<LockMode>("exclusive", "shared"),
      wait: fc.boolean(),
      limit: fc.constantFrom(Infinity, Infinity, 1, 2),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("release" as const),
      owner: fc.integer({ min: 0, max: 4 }),
      name: fc.constantFrom("a", "b", "c"),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("releaseAll" as const),
      owner: fc.integer({ min: 0, max: 4 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("withdraw" as const),
      owner: fc.integer({ min: 0, max: 4 }),
      name: fc.constantFrom("a", "b", "c"),
    }),
  },
);

function checkInvariants(
  table: LockTable<number, number>,
  model: Model,
  step: number,
): void {
  const where = `after step ${step}`;
  assert.deepEqual(
    [...table.names()].sort(),
    [...model.locks.keys()].sort(),
    where,
  );
  assert.equal(table.size, model.locks.size, where);
  for (const [name, expected] of model.locks) {
    const state = table.inspect(name);
    assert.ok(state !== null, `${where}: lock "${name}" is missing`);
    const { holders, waiters } = state;
    // Mutual exclusion.
    assert.ok(
      holders.length > 0,
      `${where}: "${name}" has waiters but no holder`,
    );
    const exclusive = holders.filter((holder) =>
      holder.mode === "exclusive"
    ).length;
    assert.ok(
      exclusive === 0 || holders.length === 1,
      `${where}: "${name}" mixes an exclusive holder with others`,
    );
    assert.equal(state.mode, holders[0]!.mode, where);
    // The limit is the one its shared requests agreed on, and holds.
    assert.equal(state.limit, Model.limitOf(expected) ?? Infinity, where);
    assert.ok(holders.length <= state.limit, `${where}: over the limit`);
    assert.ok(
      holders.every((holder) => holder.held && holder.token > 0),
      where,
    );
    assert.ok(
      waiters.every((waiter) => !waiter.held && waiter.token === 0),
      where,
    );
    // No lost wake-ups: the head of the queue could not hold now.
    if (waiters.length > 0) {
      assert.equal(
        Model.grantable(holders, { ...waiters[0]!, limit: state.limit }),
        false,
        `${where}: "${name}" left a grantable waiter`,
      );
    }
    // The table agrees with the model.
    const summary = (
      requests: readonly { owner: number; mode: LockMode; ticket: number }[],
    ) => requests.map(({ owner, mode, ticket }) => ({ owner, mode, ticket }));
    assert.deepEqual(
      summary(holders),
      summary(expected.holders),
      `${where}: holders of "${name}"`,
    );
    assert.deepEqual(
      summary(waiters),
      summary(expected.waiters),
      `${where}: waiters of "${name}"`,
    );
  }
  for (let owner = 0; owner <= 4; owner++) {
    assert.deepEqual(
      table.requestsOf(owner).map((entry) => entry.ticket),
      (model.owners.get(owner) ?? []).map((entry) => entry.ticket),
      `${where}: requests of owner ${owner}`,
    );
  }
}

test("LockTable behaves like a reference model of FIFO queues under random operations (property)", () => {
  fc.assert(
    fc.property(
      fc.array(stepArbitrary, { maxLength: 80, size: "max" }),
      (steps) => {
        const table = new RecordingTable<number, number>();
        const granted = table.grants;
        const model = new Model();
        /** Every request the table returned, by ticket, to withdraw stale ones too. */
        const requests = new Map<string, LockRequest<number, number>>();
        const modelRequests = new Map<number, ModelRequest>();
        let lastToken = 0;
        let ticket = 0;

        const checkGrants = (expected: number[], where: string) => {
          assert.deepEqual(
            granted.map((entry) => entry.ticket),
            expected,
            `${where}: grants`,
          );
          for (const entry of granted) {
            assert.ok(entry.held, where);
            assert.ok(
              entry.token > lastToken,
              `${where}: tokens must strictly increase`,
            );
            lastToken = entry.token;
          }
          granted.length = 0;
        };

        steps.forEach((step, index) => {
          const where = `step ${index} ${JSON.stringify(step)}`;
          switch (step.kind) {
            case "acquire": {
              const entry = {
                owner: step.owner,
                name: step.name,
                mode: step.mode,
                ticket: ++ticket,
                limit: step.limit,
              };
              const expected = model.acquire(entry, step.wait);
              const result = table.acquire(
                step.owner,
                step.name,
                step.mode,
                entry.ticket,
                step.wait,
                step.limit,
              );
              if (typeof result === "string") {
                assert.equal(result, expected, where);
              } else {
                assert.equal(result.held ? "held" : "waiting", expected, where);
                assert.equal(result.ticket, entry.ticket, where);
                if (result.held) {
                  assert.ok(
                    result.token > lastToken,
                    `${where}: tokens must strictly increase`,
                  );
                  lastToken = result.token;
                } else {
                  assert.equal(result.token, 0, where);
                }
                requests.set(`${step.owner}/${step.name}`, result);
                modelRequests.set(entry.ticket, entry);
              }
              checkGrants([], where);
              break;
            }
            case "release": {
              const entry = model.find(step.owner, step.name);
              const expected = entry === undefined ? [] : model.remove(entry);
              const removed = table.release(step.owner, step.name);
              assert.equal(removed?.ticket, entry?.ticket, where);
              checkGrants(expected, where);
              break;
            }
            case "releaseAll": {
              const own = [...(model.owners.get(step.owner) ?? [])];
              const expected = own.flatMap((entry) => model.remove(entry));
              const removed = table.releaseAll(step.owner);
              assert.deepEqual(
                removed.map((entry) => entry.ticket),
                own.map((entry) => entry.ticket),
                where,
              );
              checkGrants(expected, where);
              break;
            }
            case "withdraw": {
              // The last request this owner made for the lock: maybe waiting,
              // maybe held, maybe long gone.
              const last = requests.get(`${step.owner}/${step.name}`);
              if (last === undefined) break;
              const entry = modelRequests.get(last.ticket)!;
              const live = model.find(step.owner, step.name) === entry;
              const waiting = live && !model.held(entry);
              const expected = waiting ? model.remove(entry) : [];
              assert.equal(table.withdraw(last), waiting, where);
              checkGrants(expected, where);
              break;
            }
          }
          checkInvariants(table, model, index);
        });
      },
    ),
    { numRuns: 1000 },
  );
});
