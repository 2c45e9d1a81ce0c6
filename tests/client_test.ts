// The client library (mod.ts) against a real server over TCP.
import assert from "node:assert/strict";
import {
  connect,
  ConnectionError,
  type Lock,
  LockLostError,
  LockTimeoutError,
  RemoteError,
  RequestRefusedError,
} from "../mod.ts";
import { deadline, spawnHolder, startServer } from "./helpers.ts";

Deno.test("lock() hands a lock over in FIFO order among four clients", async () => {
  await using server = startServer();
  const port = server.addr.port;
  const clients = await Promise.all(
    [0, 1, 2, 3].map(() => connect({ port })),
  );
  try {
    const order: number[] = [];
    const first = await clients[0]!.lock("fifo");
    const waiting: Promise<Lock>[] = [];
    for (const i of [1, 2, 3]) {
      const client = clients[i]!;
      waiting.push(
        client.lock("fifo").then((lock) => {
          order.push(i);
          return lock;
        }),
      );
      await client.ping(); // the request is queued before the next one is made
    }
    await first.release();
    for (const pending of waiting) {
      const lock = await pending;
      await lock.release();
    }
    assert.deepEqual(order, [1, 2, 3]);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});

Deno.test("tokens strictly increase with every grant", async () => {
  await using server = startServer();
  await using client = await connect({ port: server.addr.port });
  const tokens: number[] = [];
  for (let i = 0; i < 5; i++) {
    const lock = await client.lock(i % 2 ? "a" : "b");
    tokens.push(lock.token);
    await lock.release();
  }
  assert.deepEqual(tokens, [...tokens].sort((a, b) => a - b));
  assert.equal(new Set(tokens).size, tokens.length);
});

Deno.test("await using releases the lock at the end of the block", async () => {
  await using server = startServer();
  await using a = await connect({ port: server.addr.port });
  await using b = await connect({ port: server.addr.port });
  {
    await using lock = await a.lock("scoped");
    assert.equal(lock.held, true);
    assert.equal(await b.tryLock("scoped"), null);
  }
  const lock = await b.tryLock("scoped");
  assert.notEqual(lock, null);
  await lock!.release();
});

Deno.test("a holder killed with kill -9 releases to the next waiter within 1 s", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = spawnHolder(port, "crash");
  await holder.waitFor(/held \d+\n/);
  await using waiter = await connect({ port });
  const granted = waiter.lock("crash");
  await waiter.ping();
  const killedAt = performance.now();
  holder.kill("SIGKILL");
  const lock = await deadline(granted, 5000, "the grant after kill -9");
  const elapsed = performance.now() - killedAt;
  assert.ok(elapsed < 1000, `granted ${elapsed.toFixed(0)} ms after kill -9`);
  await lock.release();
});

Deno.test("a bounded wait times out and leaves no stale request behind", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using waiter = await connect({ port });
  await using third = await connect({ port });
  const held = await holder.lock("bounded");
  await assert.rejects(
    waiter.lock("bounded", { wait: 50 }),
    (error: Error) =>
      error instanceof LockTimeoutError &&
      error.message === 'Cannot acquire lock "bounded": timed out after 50 ms',
  );
  const next = third.lock("bounded");
  await third.ping();
  await held.release();
  // The timed-out waiter's request is gone: the third client is next in line.
  const lock = await next;
  assert.equal(lock.held, true);
  // And the waiter has no request left that would make a new one a duplicate.
  const again = waiter.lock("bounded", { wait: 0 });
  await assert.rejects(again, LockTimeoutError);
  await lock.release();
});

Deno.test("wait: 0 takes a free lock and refuses a taken one at once", async () => {
  await using server = startServer();
  await using a = await connect({ port: server.addr.port });
  await using b = await connect({ port: server.addr.port });
  const lock = await a.tryLock("try");
  assert.ok(lock);
  assert.equal(await b.tryLock("try"), null);
  await lock.release();
  const taken = await b.tryLock("try");
  assert.ok(taken);
  await taken.release();
});

Deno.test("an aborted wait rejects at once and is withdrawn on the server behind it", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using waiter = await connect({ port });
  await using third = await connect({ port });
  const held = await holder.lock("abort");
  const controller = new AbortController();
  const waiting = waiter.lock("abort", { signal: controller.signal });
  await waiter.ping();
  controller.abort(new Error("changed my mind"));
  await assert.rejects(waiting, { message: "changed my mind" });
  // Replies come in order: once a ping returns, the withdrawal is done.
  await waiter.ping();
  const next = third.lock("abort");
  await third.ping();
  await held.release();
  const lock = await next;
  await lock.release();
});

Deno.test("an abort racing the grant never leaves the lock held", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using waiter = await connect({ port });
  await using third = await connect({ port });
  for (let round = 0; round < 20; round++) {
    const held = await holder.lock("race");
    const controller = new AbortController();
    const waiting = waiter.lock("race", { signal: controller.signal });
    await waiter.ping();
    // Release and abort in the same tick: whichever the server sees first,
    // the waiter must not end up holding the lock.
    const released = held.release();
    controller.abort(new Error("abort"));
    const rejected = assert.rejects(waiting, { message: "abort" });
    await released;
    await rejected;
    await waiter.ping();
    const lock = await third.tryLock("race");
    assert.ok(lock, `round ${round}: lock left held after the abort`);
    await lock.release();
  }
});

Deno.test("the lost signal fires when the connection dies while holding", async () => {
  const server = startServer();
  await using client = await connect({ port: server.addr.port });
  const lock = await client.lock("fragile");
  assert.equal(lock.lost.aborted, false);
  const lost = new Promise((resolve) =>
    lock.lost.addEventListener("abort", resolve, { once: true })
  );
  await server.close();
  await lost;
  assert.ok(lock.lost.reason instanceof LockLostError);
  assert.equal(lock.held, false);
  await lock.release(); // nothing to do, and no error
});

Deno.test("release() never fires the lost signal", async () => {
  await using server = startServer();
  await using client = await connect({ port: server.addr.port });
  const lock = await client.lock("calm");
  await lock.release();
  await client.close();
  assert.equal(lock.lost.aborted, false);
});

Deno.test("an over-long lock name is refused by the server with its typed code", async () => {
  await using server = startServer({ maxLockNameLength: 8 });
  await using client = await connect({ port: server.addr.port });
  await assert.rejects(
    client.lock("123456789"),
    (error: Error) =>
      error instanceof RequestRefusedError && error instanceof RemoteError &&
      error.code === "name_too_long",
  );
  const lock = await client.lock("12345678");
  await lock.release();
});

Deno.test("connect() to a port nobody listens on fails with ConnectionError", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await assert.rejects(
    connect({ port }),
    (error: Error) =>
      error instanceof ConnectionError && error.message.includes(`:${port}`),
  );
});

Deno.test("a lock granted to a retry right after an aborted wait is tracked: lost fires", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  const first = await holder.lock("retry");
  const client = await connect({ port });
  const controller = new AbortController();
  const waiting = client.lock("retry", { signal: controller.signal });
  await client.ping();
  controller.abort(new Error("gave up"));
  const retry = client.lock("retry"); // in the same tick, as a retry loop would
  await assert.rejects(waiting, { message: "gave up" });
  await first.release();
  const lock = await retry;
  assert.equal(lock.held, true);
  await client.close();
  assert.equal(lock.lost.aborted, true);
  assert.ok(lock.lost.reason instanceof LockLostError);
});

Deno.test("status() with a reply far over 64 KiB keeps the asker's connection and locks", async () => {
  await using server = startServer();
  await using holder = await connect({ port: server.addr.port });
  await using asker = await connect({ port: server.addr.port });
  const mine = await asker.lock("mine");
  const names = Array.from({ length: 1000 }, (_, i) => `${i}`.padEnd(200, "."));
  const locks = await Promise.all(names.map((name) => holder.lock(name)));
  const status = await asker.status();
  assert.equal(status.locks.length, 1001);
  assert.ok(JSON.stringify(status).length > 256 * 1024);
  assert.equal(mine.held, true);
  await asker.ping();
  await Promise.all(locks.map((lock) => lock.release()));
  await mine.release();
});
