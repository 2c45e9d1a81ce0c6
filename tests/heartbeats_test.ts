// Silent and dead peers, with real child processes stopped with SIGSTOP:
// without heartbeats a silent client or a stopped holder keeps what it has;
// with heartbeats a dead peer is dropped within the timeout and its locks go
// to the next waiter, while a live idle holder keeps its lock.
import assert from "node:assert/strict";
import { connect, LockTimeoutError, type Message } from "../mod.ts";
import { assertSoleHolder } from "./assertions.ts";
import { deadline, RawClient, spawnHolder, startServer } from "./helpers.ts";
import { ask } from "./wire.ts";

Deno.test("a client that connects and sends nothing neither holds nor blocks anything", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using silent = await RawClient.connect(port);
  await using a = await connect({ port });
  await using b = await connect({ port });
  for (let round = 0; round < 3; round++) {
    const lock = await a.lock("turns");
    const next = b.lock("turns");
    await lock.release();
    await (await deadline(next, 5000, "b's turn")).release();
  }
  const held = await a.lock("turns");
  const status = await b.status();
  assert.equal(status.connections.current, 3);
  const owners = status.locks.flatMap((lock) =>
    [...lock.holders, ...lock.waiters].map((request) => request.connectionId)
  );
  assert.deepEqual(owners, [a.server.connectionId]);
  await held.release();
  // Without heartbeats the silent client is left alone, and still served.
  assert.deepEqual(await ask(silent, { command: "ping", id: 1 }), {
    id: 1,
    result: { status: "ok" },
  });
});

Deno.test("with heartbeats on, a silent client is sent heartbeats, then dropped; a live one stays", async () => {
  await using server = startServer({
    heartbeat: { interval: 100, timeout: 400 },
  });
  const port = server.addr.port;
  await using live = await connect({ port });
  await using other = await connect({ port });
  const kept = await live.lock("kept");
  await using silent = await RawClient.connect(port);
  const received = (async () => {
    const messages: Message[] = [];
    for (let message; (message = await silent.next()) !== null;) {
      messages.push(message);
    }
    return messages;
  })();
  const messages = await deadline(received, 5000, "the silent client's drop");
  // Heartbeats, then the farewell that says why it is dropped.
  assert.deepEqual(messages.at(-1), { event: "heartbeat_timeout" });
  assert.ok(messages.length >= 2, "at least one heartbeat before the drop");
  for (const message of messages.slice(0, -1)) {
    assert.deepEqual(message, { event: "heartbeat" });
  }
  assert.equal(kept.lost.aborted, false);
  await assertSoleHolder(live, other, "kept");
  assert.equal((await other.status()).connections.current, 2);
});

/**
 * Spawns a holder of `name`, stops it with SIGSTOP, runs `body`, then lets the
 * holder go on (SIGCONT) and kills it so that it can be reaped.
 */
async function withStoppedHolder(
  port: number,
  name: string,
  body: (stoppedAt: number) => Promise<void>,
): Promise<void> {
  await using holder = spawnHolder(port, name);
  await holder.waitFor(/held \d+\n/);
  try {
    holder.kill("SIGSTOP");
    await body(performance.now());
  } finally {
    holder.kill("SIGCONT");
    holder.kill("SIGKILL");
  }
}

Deno.test("with heartbeats off, a holder stopped with SIGSTOP keeps its lock", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await withStoppedHolder(port, "stalled", async () => {
    await using waiter = await connect({ port });
    await assert.rejects(waiter.lock("stalled", { wait: 1500 }), (error) => {
      return error instanceof LockTimeoutError;
    });
    const lock = (await waiter.status()).locks.find((lock) =>
      lock.name === "stalled"
    );
    assert.equal(lock?.holders.length, 1);
    assert.equal(lock?.waiters.length, 0);
  });
});

Deno.test("with heartbeats on, a holder stopped with SIGSTOP loses its lock to a waiter within 2 s", async () => {
  await using server = startServer({
    heartbeat: { interval: 100, timeout: 400 },
  });
  const port = server.addr.port;
  await using waiter = await connect({ port });
  await withStoppedHolder(port, "stalled", async (stoppedAt) => {
    const granted = waiter.lock("stalled");
    const lock = await deadline(granted, 5000, "the grant after SIGSTOP");
    const elapsed = performance.now() - stoppedAt;
    assert.ok(elapsed < 2000, `granted ${elapsed.toFixed(0)} ms after SIGSTOP`);
    await lock.release();
  });
});

Deno.test("a holder dropped for its heartbeat timeout learns why once it runs again", async () => {
  await using server = startServer({
    heartbeat: { interval: 100, timeout: 400 },
  });
  const port = server.addr.port;
  await using waiter = await connect({ port });
  await using holder = spawnHolder(port, "stalled");
  await holder.waitFor(/held \d+\n/);
  holder.kill("SIGSTOP");
  try {
    const lock = await deadline(waiter.lock("stalled"), 5000, "the grant");
    await lock.release();
  } finally {
    holder.kill("SIGCONT");
  }
  await holder.waitFor(/lost heartbeat_timeout\n/);
  holder.kill("SIGKILL");
});

Deno.test("with heartbeats on, a live idle holder keeps its lock for several timeouts", async () => {
  await using server = startServer({
    heartbeat: { interval: 100, timeout: 400 },
  });
  const port = server.addr.port;
  // A separate process whose client does nothing but answer heartbeats.
  await using holder = spawnHolder(port, "idle");
  await holder.waitFor(/held \d+\n/);
  await using waiter = await connect({ port });
  // The thing under test is time passing: three timeouts' worth.
  await assert.rejects(
    waiter.lock("idle", { wait: 1200 }),
    (error) => error instanceof LockTimeoutError,
  );
  const status = await waiter.status();
  assert.equal(status.locks.length, 1);
  assert.equal(status.locks[0]?.holders.length, 1);
  assert.equal(status.connections.current, 2);
});
