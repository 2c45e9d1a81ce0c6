// Lock semantics beyond flock(), through the client library and raw frames
// over real TCP: shared and exclusive modes and their fairness, bounded waits,
// re-entrancy, deadlock refusal, position events and the status report.
import assert from "node:assert/strict";
import {
  connect,
  type Lock,
  type LockClient,
  LockTimeoutError,
  type StatusLock,
} from "../mod.ts";
import { delay } from "../message/io.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import { remote } from "./assertions.ts";
import { connectMany, deadline, RawClient, startServer } from "./helpers.ts";
import { ask, errorCode, nextOf } from "./wire.ts";

/** A lock request the server has queued. */
interface Queued {
  /** Its outcome: the grant, or why there was none. */
  outcome: Promise<Lock>;
}

/**
 * Asks for a lock and returns once the server has queued the request: the
 * reply to a ping sent after it comes after any immediate outcome.
 */
async function queue(
  client: LockClient,
  name: string,
  options: Parameters<LockClient["lock"]>[1] = {},
): Promise<Queued> {
  const outcome = client.lock(name, options);
  // Keep a rejection from counting as unhandled before the test awaits it.
  outcome.catch(() => {});
  await client.ping();
  return { outcome };
}

/** What the server says about one lock, or `null` when it does not exist. */
async function lockState(
  observer: LockClient,
  name: string,
): Promise<StatusLock | null> {
  const { locks } = await observer.status();
  return locks.find((lock) => lock.name === name) ?? null;
}

/** The connection ids of a lock's holders and waiters, and its mode. */
async function who(observer: LockClient, name: string) {
  const state = await lockState(observer, name);
  if (state === null) return null;
  return {
    mode: state.mode,
    holders: sorted(state.holders.map((holder) => holder.connectionId)),
    waiters: state.waiters.map((waiter) => waiter.connectionId),
  };
}

function ids(...clients: LockClient[]): number[] {
  return clients.map((client) => client.server.connectionId);
}

function sorted(numbers: number[]): number[] {
  return [...numbers].sort((a, b) => a - b);
}

/** Awaits a grant, failing instead of hanging if it never comes. */
function granted<T = Lock>(
  pending: Queued | Promise<T>,
  what = "the grant",
): Promise<T> {
  const promise = pending instanceof Promise
    ? pending
    : pending.outcome as Promise<T>;
  return deadline(promise, 5000, what);
}

// Shared and exclusive

Deno.test("any number of shared holders hold a lock together", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 5);
  const [observer, ...readers] = clients;
  const locks = [];
  for (const reader of readers.slice(0, 3)) {
    locks.push(await reader.lock("rw", { mode: "shared" }));
  }
  const tried = await readers[3]!.tryLock("rw", { mode: "shared" });
  assert.ok(tried, "tryLock() in shared mode joins shared holders");
  locks.push(tried);
  assert.deepEqual(locks.map((lock) => lock.mode), Array(4).fill("shared"));
  assert.deepEqual(await who(observer, "rw"), {
    mode: "shared",
    holders: sorted(ids(...readers)),
    waiters: [],
  });
  // But an exclusive tryLock is refused while they hold it.
  assert.equal(await observer.tryLock("rw"), null);
  await Promise.all(locks.map((lock) => lock.release()));
  assert.equal(await lockState(observer, "rw"), null);
});

Deno.test("an exclusive request waits for every shared holder and is granted when the last one releases", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 5);
  const [observer, writer, ...readers] = clients;
  const shared = [];
  for (const reader of readers) {
    shared.push(await reader.lock("rw", { mode: "shared" }));
  }
  const waiting = await queue(writer, "rw");
  for (const lock of shared.slice(0, -1)) {
    await lock.release();
    const state = await who(observer, "rw");
    assert.deepEqual(state?.waiters, ids(writer), "the writer still waits");
  }
  await shared.at(-1)!.release();
  const lock = await granted(waiting);
  assert.equal(lock.mode, "exclusive");
  assert.ok(lock.token > Math.max(...shared.map((held) => held.token)));
  assert.deepEqual(await who(observer, "rw"), {
    mode: "exclusive",
    holders: ids(writer),
    waiters: [],
  });
  await lock.release();
});

Deno.test("a shared request behind a queued exclusive one waits behind it, so writers never starve", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 5);
  const [observer, reader1, writer, reader2, reader3] = clients;
  const first = await reader1.lock("rw", { mode: "shared" });
  const writing = await queue(writer, "rw");
  // The lock is held shared, yet a new shared request queues behind the writer
  // instead of joining the holders...
  const reading = await queue(reader2, "rw", { mode: "shared" });
  // ...and a shared tryLock is refused.
  assert.equal(await reader3.tryLock("rw", { mode: "shared" }), null);
  assert.deepEqual(await who(observer, "rw"), {
    mode: "shared",
    holders: ids(reader1),
    waiters: ids(writer, reader2),
  });
  await first.release();
  const written = await granted(writing, "the writer's grant");
  assert.deepEqual(await who(observer, "rw"), {
    mode: "exclusive",
    holders: ids(writer),
    waiters: ids(reader2),
  });
  await written.release();
  const read = await granted(reading, "the second reader's grant");
  assert.ok(read.token > written.token);
  await read.release();
});

Deno.test("a run of shared waiters at the head is granted together while an exclusive one behind them keeps waiting", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 7);
  const [observer, owner, r1, r2, r3, writer, r4] = clients;
  const held = await owner.lock("rw");
  const readers = [];
  for (const reader of [r1, r2, r3]) {
    readers.push(await queue(reader, "rw", { mode: "shared" }));
  }
  const writing = await queue(writer, "rw");
  const late = await queue(r4, "rw", { mode: "shared" });
  await held.release();
  const reads = await granted(
    Promise.all(readers.map((r) => r.outcome)),
    "the shared run",
  );
  // Granted in queue order, each with its own token.
  assert.deepEqual(
    reads.map((lock) => lock.token),
    [1, 2, 3].map((i) => held.token + i),
  );
  assert.deepEqual(await who(observer, "rw"), {
    mode: "shared",
    holders: sorted(ids(r1, r2, r3)),
    waiters: ids(writer, r4),
  });
  for (const lock of reads.slice(0, -1)) await lock.release();
  assert.deepEqual((await who(observer, "rw"))?.waiters, ids(writer, r4));
  await reads.at(-1)!.release();
  const written = await granted(writing, "the writer's grant");
  assert.deepEqual((await who(observer, "rw"))?.waiters, ids(r4));
  await written.release();
  await (await granted(late, "the last reader's grant")).release();
  assert.equal(await lockState(observer, "rw"), null);
});

Deno.test("withdrawing a queued exclusive request grants the shared waiters stuck behind it", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 4);
  const [observer, reader1, writer, reader2] = clients;
  const first = await reader1.lock("rw", { mode: "shared" });
  const controller = new AbortController();
  const writing = await queue(writer, "rw", { signal: controller.signal });
  const reading = await queue(reader2, "rw", { mode: "shared" });
  controller.abort(new Error("not any more"));
  await assert.rejects(writing.outcome, { message: "not any more" });
  const read = await granted(reading);
  assert.deepEqual(await who(observer, "rw"), {
    mode: "shared",
    holders: sorted(ids(reader1, reader2)),
    waiters: [],
  });
  await first.release();
  await read.release();
});

// Bounded waits

Deno.test("a release racing a bounded wait's timeout gives the waiter exactly one outcome", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [holder, waiter, third] = clients;
  const outcomes = { granted: 0, timedOut: 0 };
  for (let round = 0; round < 30; round++) {
    const wait = 5 + (round % 6) * 5; // 5 to 30 ms
    const held = await holder.lock("race");
    const asking = waiter.lock("race", { wait });
    // A deliberate race: the holder lets go at about the moment the wait
    // ends, up to 2 ms early, so that each side wins some rounds.
    const released = delay(wait - (round % 3)).then(() => held.release());
    const outcome = await deadline(
      asking.then((lock) => lock, (error: unknown) => error),
      5000,
      `round ${round}: the waiter's outcome`,
    );
    await released;
    if (outcome instanceof LockTimeoutError) {
      outcomes.timedOut++;
      // No grant followed the timeout: the lock is free for anyone.
      const lock = await third.tryLock("race");
      assert.ok(lock, `round ${round}: timed out, yet the lock is held`);
      await lock.release();
    } else {
      assert.ok(
        outcome !== null && typeof outcome === "object" && "token" in outcome,
        `round ${round}: unexpected outcome ${outcome}`,
      );
      outcomes.granted++;
      const lock = outcome as Lock;
      assert.ok(lock.token > held.token);
      assert.equal(await third.tryLock("race"), null, `round ${round}`);
      await lock.release();
    }
    // Nothing is left: no holder, no stale waiter.
    assert.equal(await lockState(third, "race"), null, `round ${round}`);
  }
  assert.equal(outcomes.granted + outcomes.timedOut, 30);
});

Deno.test("tryLock() in either mode is refused by an exclusive holder and queues nothing", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [holder, trier, observer] = clients;
  const held = await holder.lock("try");
  assert.equal(await trier.tryLock("try"), null);
  assert.equal(await trier.tryLock("try", { mode: "shared" }), null);
  assert.deepEqual(await who(observer, "try"), {
    mode: "exclusive",
    holders: ids(holder),
    waiters: [],
  });
  await held.release();
});

// Re-entrancy

Deno.test("the server refuses a second request for a name the connection holds or waits for, and keeps the first", async () => {
  await using server = startServer();
  await using observer = await connect({ port: server.addr.port });
  await using holder = await RawClient.connect(server.addr.port);
  await using waiter = await RawClient.connect(server.addr.port);
  const lock = (id: number, mode: string) => ({
    command: "lock",
    parameters: { lockName: "again", mode },
    id,
  });
  // A connection that never sent hello is a legacy one, whose re-lock of a
  // held name is answered ok (tests/legacy_protocol_test.ts).
  for (const raw of [holder, waiter]) {
    assert.equal((await ask(raw, { command: "hello", id: 0 }))?.id, 0);
  }
  assert.deepEqual((await ask(holder, lock(1, "shared")))?.result, {
    status: "ok",
    token: 1,
  });
  assert.equal(errorCode(await ask(holder, lock(2, "shared"))), "already_held");
  assert.equal(
    errorCode(await ask(holder, lock(3, "exclusive"))),
    "already_held",
  );
  await waiter.send(lock(1, "exclusive"));
  assert.deepEqual((await ask(waiter, { command: "ping", id: 2 }))?.id, 2);
  assert.equal(
    errorCode(await ask(waiter, lock(3, "exclusive"))),
    "already_waiting",
  );
  const state = await lockState(observer, "again");
  assert.equal(state?.holders.length, 1);
  assert.equal(state?.waiters.length, 1);
  await holder.send({ command: "release", parameters: { lockName: "again" } });
  assert.deepEqual((await nextOf(waiter))?.result, { status: "ok", token: 2 });
});

Deno.test("the client library queues a second request for a name it holds until the first is released", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 2);
  const [a, b] = clients;
  const lock = await a.lock("mine", { mode: "shared" });
  assert.equal(await a.tryLock("mine"), null);
  assert.equal(await a.tryLock("mine", { mode: "shared" }), null);
  const again = await queue(a, "mine", { mode: "shared" });
  assert.deepEqual(await who(b, "mine"), {
    mode: "shared",
    holders: ids(a),
    waiters: [],
  });
  await lock.release();
  const second = await granted(again, "the second request's grant");
  assert.ok(second.token > lock.token);
  await second.release();
});

Deno.test("aborting a second lock() for a name leaves the existing hold alone", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 2);
  const [a, b] = clients;
  const lock = await a.lock("kept");
  const controller = new AbortController();
  const again = a.lock("kept", { signal: controller.signal });
  controller.abort(new Error("abandoned"));
  await assert.rejects(again, { message: "abandoned" });
  await a.ping();
  assert.equal(lock.held, true);
  assert.equal(await b.tryLock("kept"), null, "the first hold was released");
  await lock.release();
  const taken = await b.tryLock("kept");
  assert.ok(taken);
  await taken.release();
});

Deno.test("aborting a second lock() for a name leaves the first request queued", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [holder, waiter, observer] = clients;
  const held = await holder.lock("kept");
  const first = await queue(waiter, "kept");
  const controller = new AbortController();
  const again = waiter.lock("kept", { signal: controller.signal });
  controller.abort(new Error("abandoned"));
  await assert.rejects(again, { message: "abandoned" });
  await waiter.ping();
  assert.deepEqual((await who(observer, "kept"))?.waiters, ids(waiter));
  await held.release();
  const lock = await granted(first, "the first request's grant");
  assert.equal(lock.held, true);
  await lock.release();
});

// Deadlocks

Deno.test("a request that would close a two-party cycle is refused with deadlock and changes nothing", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [a, b, observer] = clients;
  const x = await a.lock("x");
  const y = await b.lock("y");
  const aWaitsY = await queue(a, "y");
  await assert.rejects(
    b.lock("x"),
    (error: Error) =>
      remote("deadlock")(error) && error.message.includes('"x"'),
  );
  assert.deepEqual(await who(observer, "x"), {
    mode: "exclusive",
    holders: ids(a),
    waiters: [],
  });
  assert.deepEqual(await who(observer, "y"), {
    mode: "exclusive",
    holders: ids(b),
    waiters: ids(a),
  });
  await y.release();
  const yForA = await granted(aWaitsY);
  await yForA.release();
  await x.release();
});

Deno.test("a request that would close a three-party cycle is refused with deadlock", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 4);
  const [a, b, c, observer] = clients;
  const x = await a.lock("x");
  const y = await b.lock("y");
  const z = await c.lock("z");
  const aWaitsY = await queue(a, "y");
  const bWaitsZ = await queue(b, "z");
  await assert.rejects(c.lock("x"), remote("deadlock"));
  await assert.rejects(c.lock("x", { wait: 60_000 }), remote("deadlock"));
  assert.deepEqual((await who(observer, "x"))?.waiters, []);
  assert.deepEqual((await who(observer, "y"))?.waiters, ids(a));
  assert.deepEqual((await who(observer, "z"))?.waiters, ids(b));
  // The chain unwinds normally once c lets go.
  await z.release();
  const zForB = await granted(bWaitsZ);
  await zForB.release();
  await y.release();
  const yForA = await granted(aWaitsY);
  await Promise.all([yForA.release(), x.release()]);
});

Deno.test("deadlock detection knows shared holders: exclusive closes the cycle, shared is granted at once", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 4);
  const [a, b, c, observer] = clients;
  const xa = await a.lock("x", { mode: "shared" });
  const xb = await b.lock("x", { mode: "shared" });
  const y = await c.lock("y");
  const bWaitsY = await queue(b, "y");
  await assert.rejects(c.lock("x"), remote("deadlock"));
  assert.deepEqual((await who(observer, "x"))?.waiters, []);
  // Nobody waits for x and its holders are shared: a shared request neither
  // waits nor closes a cycle.
  const xc = await c.lock("x", { mode: "shared" });
  assert.deepEqual(await who(observer, "x"), {
    mode: "shared",
    holders: sorted(ids(a, b, c)),
    waiters: [],
  });
  await y.release();
  const yForB = await granted(bWaitsY);
  await Promise.all([xa, xb, xc, yForB].map((lock) => lock.release()));
});

// Position events

/** Records the positions a waiter is told. */
function recorder() {
  const seen: number[] = [];
  return { seen, onPosition: (position: number) => void seen.push(position) };
}

Deno.test("waiters are told their place when they join and whenever the queue moves", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 4);
  const [holder, w1, w2, w3] = clients;
  const held = await holder.lock("line");
  const positions = [recorder(), recorder(), recorder()] as const;
  const controller = new AbortController();
  const first = await queue(w1, "line", {
    signal: controller.signal,
    onPosition: positions[0].onPosition,
  });
  const second = await queue(w2, "line", {
    onPosition: positions[1].onPosition,
  });
  const third = await queue(w3, "line", {
    onPosition: positions[2].onPosition,
  });
  // An event is sent before the reply to the ping that follows the request.
  assert.deepEqual(positions.map((p) => p.seen), [[1], [2], [3]]);

  controller.abort(new Error("leaving the line"));
  await assert.rejects(first.outcome, { message: "leaving the line" });
  // The withdrawal was handled before its reply, so were the events it caused.
  await w2.ping();
  await w3.ping();
  assert.deepEqual(positions.map((p) => p.seen), [[1], [2, 1], [3, 2]]);

  await held.release();
  const lock = await granted(second);
  await w3.ping();
  assert.deepEqual(positions.map((p) => p.seen), [[1], [2, 1], [3, 2, 1]]);
  await lock.release();
  await (await granted(third)).release();
  await w2.ping();
  // No events once granted.
  assert.deepEqual(positions.map((p) => p.seen), [[1], [2, 1], [3, 2, 1]]);
});

Deno.test("waiters are told their new place when a waiter ahead times out", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [holder, w1, w2] = clients;
  const held = await holder.lock("line");
  const positions = [recorder(), recorder()] as const;
  const first = await queue(w1, "line", {
    wait: 20,
    onPosition: positions[0].onPosition,
  });
  const second = await queue(w2, "line", {
    onPosition: positions[1].onPosition,
  });
  await assert.rejects(first.outcome, LockTimeoutError);
  await w2.ping();
  assert.deepEqual(positions.map((p) => p.seen), [[1], [2, 1]]);
  await held.release();
  await (await granted(second)).release();
});

Deno.test("a lock request with notify gets position events; one without gets none", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await RawClient.connect(port);
  await using notified = await RawClient.connect(port);
  await using silent = await RawClient.connect(port);
  await using later = await RawClient.connect(port);
  const lock = (id: number, extra: Record<string, unknown> = {}) => ({
    command: "lock",
    parameters: { lockName: "raw", ...extra },
    id,
  });
  assert.equal(
    ((await holder.request(lock(1)))?.result as { status: string }).status,
    "ok",
  );
  await notified.send(lock(1, { notify: true }));
  assert.deepEqual(await notified.next(), {
    event: "position",
    lockName: "raw",
    position: 1,
  });
  assert.deepEqual(await notified.request({ command: "ping", id: 2 }), {
    id: 2,
    result: { status: "ok" },
  });

  await silent.send(lock(1));
  assert.deepEqual(await silent.request({ command: "ping", id: 2 }), {
    id: 2,
    result: { status: "ok" },
  });
  await later.send(lock(1, { notify: true, mode: "shared" }));
  assert.deepEqual(await later.next(), {
    event: "position",
    lockName: "raw",
    position: 3,
  });

  // The holder lets go: the notified waiter is granted, with no event first,
  // and the silent one, now first in line, is still told nothing.
  await holder.request({
    command: "release",
    parameters: { lockName: "raw" },
    id: 2,
  });
  assert.deepEqual((await notified.next())?.result, { status: "ok", token: 2 });
  assert.deepEqual(await silent.request({ command: "ping", id: 3 }), {
    id: 3,
    result: { status: "ok" },
  });
  // notify must be a boolean.
  const bad = await holder.request(lock(3, { notify: "yes" }));
  assert.equal((bad?.error as { code: string }).code, "invalid_parameters");
});

// Status

Deno.test("status() reports locks by name with holders, waiters, connections and the server", async () => {
  const before = Date.now();
  await using server = startServer();
  const port = server.addr.port;
  await using clients = await connectMany(port, 5);
  const [observer, a, b, c, d] = clients;
  const gamma = await a.lock("gamma");
  const betaA = await a.lock("beta", { mode: "shared" });
  const betaB = await b.lock("beta", { mode: "shared" });
  await queue(c, "beta");
  const dWaits = await queue(d, "beta", { mode: "shared" });
  const alpha = await d.lock("alpha", { mode: "shared" });
  const asked = Date.now();

  const status = await observer.status();
  const after = Date.now();
  assert.equal(status.status, "ok");
  assert.deepEqual(status.server, {
    version: VERSION,
    protocol: PROTOCOL_VERSION,
    startedAt: status.server.startedAt,
    uptime: status.server.uptime,
  });
  const startedAt = Date.parse(status.server.startedAt);
  assert.equal(new Date(startedAt).toISOString(), status.server.startedAt);
  assert.ok(before <= startedAt && startedAt <= after);
  assert.equal(typeof status.server.uptime, "number");
  assert.ok(status.server.uptime >= 0);
  assert.ok(status.server.uptime <= (after - startedAt) / 1000 + 0.001);
  assert.deepEqual(status.connections, { current: 5, total: 5 });

  assert.deepEqual(status.locks.map((lock) => lock.name), [
    "alpha",
    "beta",
    "gamma",
  ]);
  const [alphaState, betaState, gammaState] = status.locks as [
    StatusLock,
    StatusLock,
    StatusLock,
  ];
  // The fields that vary (peer, since, elapsed) are checked below, on their
  // own.
  const entry = (client: LockClient, mode: string, token?: number) => ({
    connectionId: client.server.connectionId,
    mode,
    ...(token === undefined ? {} : { token }),
  });
  const fixed = (list: StatusLock["holders"]) =>
    list.map(({ since: _since, peer: _peer, elapsed: _elapsed, ...rest }) =>
      rest
    );
  assert.equal(alphaState.mode, "shared");
  assert.deepEqual(fixed(alphaState.holders), [
    entry(d, "shared", alpha.token),
  ]);
  assert.deepEqual(alphaState.waiters, []);
  assert.equal(betaState.mode, "shared");
  assert.deepEqual(fixed(betaState.holders), [
    entry(a, "shared", betaA.token),
    entry(b, "shared", betaB.token),
  ]);
  assert.deepEqual(fixed(betaState.waiters), [
    entry(c, "exclusive"),
    entry(d, "shared"),
  ]);
  for (const waiter of betaState.waiters) assert.ok(!("token" in waiter));
  assert.equal(gammaState.mode, "exclusive");
  assert.deepEqual(fixed(gammaState.holders), [
    entry(a, "exclusive", gamma.token),
  ]);
  assert.deepEqual(gammaState.waiters, []);

  for (const lock of status.locks) {
    for (const request of [...lock.holders, ...lock.waiters]) {
      assert.match(request.peer, /^127\.0\.0\.1:\d+$/);
      const since = Date.parse(request.since);
      assert.equal(new Date(since).toISOString(), request.since);
      assert.ok(before <= since && since <= asked, request.since);
      // Held or waited for from `since` to the reply, by the server's clock.
      assert.ok(request.elapsed >= 0, `${request.elapsed}`);
      assert.ok(
        request.elapsed <= (after - since) / 1000,
        `${request.elapsed}`,
      );
    }
  }
  // Peers are the clients' own addresses: distinct per connection.
  const peers = new Set(
    [...betaState.holders, ...betaState.waiters].map((r) => r.peer),
  );
  assert.equal(peers.size, 4);

  // A closed connection leaves "current" but not "total"; its queued request
  // goes, which lets the shared waiter behind it in, with `since` now the
  // time of the grant.
  const closedAt = Date.now();
  await c.close();
  const late = await granted(dWaits, "the shared waiter's grant");
  const next = await observer.status();
  assert.deepEqual(next.connections, { current: 4, total: 5 });
  const beta = next.locks.find((lock) => lock.name === "beta")!;
  assert.deepEqual(beta.waiters, []);
  const dHold = beta.holders.find((h) =>
    h.connectionId === d.server.connectionId
  )!;
  assert.equal(dHold.token, late.token);
  assert.ok(Date.parse(dHold.since) >= closedAt, dHold.since);
});
