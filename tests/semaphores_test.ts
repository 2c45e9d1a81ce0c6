// Semaphores, a limit on how many hold a lock at once, against a real server
// over real TCP: the client library, raw frames and the CLI as a child process.
import assert from "node:assert/strict";
import {
  connect,
  type Lock,
  type LockClient,
  type LockOptions,
} from "../mod.ts";
import { ExitCode } from "../cli/exit_codes.ts";
import { remote } from "./assertions.ts";
import {
  connectMany,
  deadline,
  RawClient,
  runCli,
  startServer,
} from "./helpers.ts";
import { ask, nextOf } from "./wire.ts";

/**
 * Asks for a lock and returns once the server has queued the request: the
 * reply to a ping sent after it comes after any immediate outcome.
 */
async function queue(
  client: LockClient,
  name: string,
  options: LockOptions,
): Promise<{ outcome: Promise<Lock> }> {
  const outcome = client.lock(name, options);
  outcome.catch(() => {});
  await client.ping();
  return { outcome };
}

/** Awaits a queued request's grant, failing instead of hanging. */
function granted(queued: { outcome: Promise<Lock> }): Promise<Lock> {
  return deadline(queued.outcome, 5000, "the grant");
}

/** The connection ids of a lock's holders and waiters, with its limit. */
async function who(observer: LockClient, name: string) {
  const lock = (await observer.status()).locks.find((l) => l.name === name);
  if (lock === undefined) return null;
  return {
    limit: lock.limit,
    holders: lock.holders.map((holder) => holder.connectionId),
    waiters: lock.waiters.map((waiter) => waiter.connectionId),
  };
}

function ids(...clients: LockClient[]): number[] {
  return clients.map((client) => client.server.connectionId);
}

Deno.test("lock() with a limit of 3 lets three hold at once, the others wait in FIFO order, and each grant has its own larger token", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 6);
  const [observer, a, b, c, d, e] = clients;
  const held = [
    await a.lock("builders", { limit: 3 }),
    await b.lock("builders", { limit: 3 }),
    await c.lock("builders", { limit: 3 }),
  ];
  assert.deepEqual(held.map((lock) => lock.mode), Array(3).fill("shared"));
  const fourth = await queue(d, "builders", { limit: 3 });
  const fifth = await queue(e, "builders", { limit: 3 });
  assert.equal(await observer.tryLock("builders", { limit: 3 }), null);
  assert.deepEqual(await who(observer, "builders"), {
    limit: 3,
    holders: ids(a, b, c),
    waiters: ids(d, e),
  });
  await held[1]!.release();
  const dLock = await granted(fourth);
  assert.deepEqual(await who(observer, "builders"), {
    limit: 3,
    holders: ids(a, c, d),
    waiters: ids(e),
  });
  await held[0]!.release();
  const eLock = await granted(fifth);
  const tokens = [...held, dLock, eLock].map((lock) => lock.token);
  assert.deepEqual(tokens, [...tokens].sort((x, y) => x - y));
  assert.equal(new Set(tokens).size, 5);
  await Promise.all([held[2]!, dLock, eLock].map((lock) => lock.release()));
  assert.equal(await who(observer, "builders"), null);
});

Deno.test("a request that disagrees on the limit of a held or awaited name is refused with limit_mismatch; exclusive and legacy requests wait as before", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [holder, other, writer] = clients;
  const lock = await holder.lock("jobs", { limit: 2 });
  await assert.rejects(
    other.lock("jobs", { limit: 3 }),
    (error: Error) =>
      remote("limit_mismatch")(error) &&
      error.message ===
        'Lock "jobs" is held or waited for with a limit of 2, not a limit of 3',
  );
  await assert.rejects(
    other.lock("jobs", { mode: "shared" }),
    remote("limit_mismatch"),
  );
  await assert.rejects(
    other.tryLock("jobs", { limit: 1 }),
    remote("limit_mismatch"),
  );
  // An exclusive request holds alone under any limit: it queues.
  const writing = await queue(writer, "jobs", {});
  // So does a legacy client's lock, sent as raw frames; its reply comes later.
  await using raw = await RawClient.connect(server.addr.port);
  await raw.send({ command: "lock", parameters: { lockName: "jobs" }, id: 1 });
  // The refusal over the wire: an error reply, no result, the connection open.
  await using wire = await RawClient.connect(server.addr.port);
  assert.deepEqual(
    await ask(wire, {
      command: "lock",
      parameters: { lockName: "jobs", limit: 5 },
      id: 2,
    }),
    {
      id: 2,
      error: {
        code: "limit_mismatch",
        message:
          'Lock "jobs" is held or waited for with a limit of 2, not a limit of 5',
      },
    },
  );
  assert.deepEqual(await ask(wire, { command: "ping", id: 3 }), {
    id: 3,
    result: { status: "ok" },
  });
  await lock.release();
  const written = await granted(writing);
  // Only exclusive requests are left: a shared one sets a new limit.
  const later = await queue(other, "jobs", { limit: 7 });
  const state = await who(holder, "jobs");
  assert.equal(state?.limit, 7);
  assert.deepEqual(state?.holders, ids(writer));
  // The legacy request first, then the new shared one.
  assert.deepEqual(state?.waiters.slice(1), ids(other));
  await written.release();
  const legacy = await nextOf(raw);
  assert.equal((legacy?.result as { status?: string }).status, "ok");
  await raw.send({ command: "unlock", lockName: "jobs" });
  await (await granted(later)).release();
});

Deno.test("invalid limits are refused: by the client before a round trip, by the server with invalid_parameters", async () => {
  await using server = startServer();
  await using client = await connect({ port: server.addr.port });
  for (const limit of [0, -1, 1.5, 2 ** 31, NaN]) {
    await assert.rejects(client.lock("x", { limit }), RangeError);
  }
  await assert.rejects(
    client.lock("x", { limit: 2, mode: "exclusive" }),
    RangeError,
  );
  await using raw = await RawClient.connect(server.addr.port);
  const cases: [unknown, string][] = [
    [{ limit: 0 }, '"limit" must be an integer from 1 to 2147483647'],
    [{ limit: "3" }, '"limit" must be an integer from 1 to 2147483647'],
    [
      { limit: 3, mode: "exclusive" },
      '"limit" is for shared requests: an exclusive one holds alone',
    ],
  ];
  let id = 0;
  for (const [parameters, message] of cases) {
    id++;
    const reply = await ask(raw, {
      command: "lock",
      parameters: { lockName: "x", ...(parameters as object) },
      id,
    });
    assert.deepEqual(reply, {
      id,
      result: { status: "invalid" },
      error: { code: "invalid_parameters", message },
    });
  }
  // Nothing was queued or held by any of them.
  assert.deepEqual((await client.status()).locks, []);
});

Deno.test("status shows the limit and every holder with its token, and the CLI's text view the slots taken", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [a, b, c] = clients;
  const held = [
    await a.lock("report", { limit: 2 }),
    await b.lock("report", { limit: 2 }),
  ];
  const waiting = await queue(c, "report", { limit: 2 });
  const [lock] = (await a.status()).locks;
  assert.equal(lock?.limit, 2);
  assert.equal(lock?.mode, "shared");
  assert.deepEqual(
    lock?.holders.map((holder) => [holder.connectionId, holder.token]),
    [[a.server.connectionId, held[0]!.token], [
      b.server.connectionId,
      held[1]!.token,
    ]],
  );
  assert.deepEqual(
    lock?.waiters.map((waiter) => waiter.connectionId),
    ids(c),
  );
  const text = await runCli(["status", "-p", String(server.addr.port)]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^lock "report" \(shared, 2 of 2 slots\)$/m);
  // An unbounded shared lock shows no limit.
  const plain = await c.lock("plain", { mode: "shared" });
  const status = await a.status();
  assert.equal(status.locks.find((l) => l.name === "plain")?.limit, undefined);
  await plain.release();
  await held[0]!.release();
  await (await granted(waiting)).release();
  await held[1]!.release();
});

Deno.test("deadlock refusal through a semaphore: a cycle with a slot a holder outside it can free is not refused, a true deadlock is", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 3);
  const [a, b, outside] = clients;
  // a and outside hold the two slots of "s"; b holds "x", which a waits for.
  const aS = await a.lock("s", { limit: 2 });
  const outsideS = await outside.lock("s", { limit: 2 });
  const bX = await b.lock("x");
  const aX = await queue(a, "x", {});
  // b waiting for "s" closes the cycle b -> a -> b, but outside waits for
  // nothing and can free its slot: b queues.
  const bS = await queue(b, "s", { limit: 2 });
  // Once outside waits for "x" too, nobody is left to free a slot.
  await assert.rejects(outside.lock("x"), remote("deadlock"));
  // The refusal changed nothing: outside releasing lets b in, then a.
  await outsideS.release();
  const bSLock = await granted(bS);
  await bSLock.release();
  await bX.release();
  await (await granted(aX)).release();
  await aS.release();
});

Deno.test("pklock run --limit 2 runs its command in a free slot, gives up with exit code 3 when both are taken, and reports limit_mismatch", async () => {
  await using server = startServer();
  await using clients = await connectMany(server.addr.port, 2);
  const [a, b] = clients;
  const port = String(server.addr.port);
  const first = await a.lock("batch", { limit: 2 });
  const ran = await runCli([
    "run",
    "batch",
    "-p",
    port,
    "--limit",
    "2",
    "--",
    "sh",
    "-c",
    "echo in a slot",
  ]);
  assert.equal(ran.code, 0, ran.stderr);
  assert.equal(ran.stdout, "in a slot\n");
  const second = await b.lock("batch", { limit: 2 });
  const full = await runCli(
    ["run", "batch", "-p", port, "--limit", "2", "--wait", "0", "--", "true"],
  );
  assert.equal(full.code, ExitCode.NotAcquired, full.stderr);
  const mismatch = await runCli(
    ["run", "batch", "-p", port, "--limit", "3", "--", "true"],
  );
  assert.equal(mismatch.code, ExitCode.Failure, mismatch.stderr);
  assert.match(mismatch.stderr, /with a limit of 2, not a limit of 3/);
  const usage = await runCli(
    ["run", "batch", "-p", port, "--limit", "0", "--", "true"],
  );
  assert.equal(usage.code, ExitCode.Usage);
  assert.match(usage.stderr, /--limit/);
  await first.release();
  await second.release();
});
