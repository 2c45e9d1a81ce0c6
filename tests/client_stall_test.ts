// The client library against a real server process stopped with SIGSTOP:
// every wait settles on the client's own clock, and nothing is left behind.
import assert from "node:assert/strict";
import {
  connect,
  ConnectionError,
  LockTimeoutError,
  RequestTimeoutError,
} from "../mod.ts";
import { type DenoProcess, spawnServer } from "./helpers.ts";

/** Stops a server process until the returned disposable resumes it. */
function stop(process: DenoProcess): Disposable {
  process.kill("SIGSTOP");
  return { [Symbol.dispose]: () => process.kill("SIGCONT") };
}

/** Milliseconds since `start`. */
function since(start: number): number {
  return performance.now() - start;
}

Deno.test("lock() with a signal settles on the client's clock while the server is stopped, and the late grant is released", async () => {
  const { process, port } = await spawnServer();
  await using _server = process;
  await using client = await connect({ port });
  await using other = await connect({ port });
  const first = await client.lock("busy");
  const token = first.token;
  await first.release();
  {
    using _stopped = stop(process);
    const start = performance.now();
    await assert.rejects(
      client.lock("busy", { signal: AbortSignal.timeout(500), wait: 1000 }),
      (error: Error) => error.name === "TimeoutError",
    );
    const elapsed = since(start);
    assert.ok(elapsed < 1000, `settled after ${elapsed.toFixed(0)} ms`);
  }
  // Resumed: the server grants the queued request (token + 1), then handles
  // the withdrawal behind it, which releases that grant at once.
  await client.ping();
  const lock = await other.tryLock("busy");
  assert.ok(lock, "the late grant was left held");
  assert.equal(lock.token, token + 2);
  await lock.release();
});

Deno.test("lock() with wait settles on the client's clock while the server is stopped", async () => {
  const { process, port } = await spawnServer();
  await using _server = process;
  await using client = await connect({ port });
  await using other = await connect({ port });
  {
    using _stopped = stop(process);
    const start = performance.now();
    await assert.rejects(
      client.lock("slow", { wait: 300 }),
      (error: Error) =>
        error instanceof LockTimeoutError &&
        error.message ===
          'Cannot acquire lock "slow": timed out after 300 ms (the server did not answer)',
    );
    const elapsed = since(start);
    // wait, plus at most 1 s for the reply's travel.
    assert.ok(
      elapsed >= 300 && elapsed < 2000,
      `settled after ${elapsed.toFixed(0)} ms`,
    );
  }
  await client.ping();
  const lock = await other.tryLock("slow");
  assert.ok(lock, "the late grant was left held");
  await lock.release();
});

Deno.test("a request to a stopped server times out and leaves the connection and its locks alone", async () => {
  const { process, port } = await spawnServer();
  await using _server = process;
  await using client = await connect({ port, timeout: 1000 });
  const lock = await client.lock("kept");
  {
    using _stopped = stop(process);
    await assert.rejects(client.status(), RequestTimeoutError);
    await assert.rejects(client.ping(), RequestTimeoutError);
    // Not null: nobody said the lock was taken.
    await assert.rejects(
      client.tryLock("tried"),
      (error: Error) =>
        error instanceof LockTimeoutError &&
        error.cause instanceof RequestTimeoutError,
    );
  }
  await client.ping();
  assert.equal(lock.held, true);
  assert.equal(client.signal.aborted, false);
  const tried = await client.tryLock("tried");
  assert.ok(tried, "the late grant of tryLock was left held");
  await tried.release();
  await lock.release();
});

Deno.test("connect() to a stopped server gives up after its timeout with nothing left open", async () => {
  const { process, port } = await spawnServer();
  await using _server = process;
  using _stopped = stop(process);
  const start = performance.now();
  // The kernel completes the TCP handshake for the stopped process: the wait
  // is for the hello reply.
  await assert.rejects(
    connect({ port, timeout: 300 }),
    (error: Error) =>
      error instanceof ConnectionError &&
      error.message ===
        `Cannot connect to 127.0.0.1:${port}: no answer within 300 ms`,
  );
  const elapsed = since(start);
  assert.ok(elapsed < 1000, `settled after ${elapsed.toFixed(0)} ms`);
  const reason = new Error("stop connecting");
  const controller = new AbortController();
  const connecting = connect({ port, signal: controller.signal });
  controller.abort(reason);
  await assert.rejects(connecting, (error) => error === reason);
});

Deno.test("connect() bounds a TLS handshake the server never answers", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const start = performance.now();
  await assert.rejects(
    connect({ port: listener.addr.port, tls: true, timeout: 300 }),
    (error: Error) =>
      error instanceof ConnectionError &&
      error.message.endsWith("no answer within 300 ms"),
  );
  const elapsed = since(start);
  assert.ok(elapsed < 1000, `settled after ${elapsed.toFixed(0)} ms`);
  (await accepted).close();
});

Deno.test("connect() tries each server in turn and stays on the first that answers", async () => {
  const stopped = await spawnServer();
  await using _stopped = stopped.process;
  const alive = await spawnServer();
  await using _alive = alive.process;
  using _paused = stop(stopped.process);
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = closed.addr.port;
  closed.close();
  await using client = await connect({
    servers: [
      `127.0.0.1:${closedPort}`,
      `127.0.0.1:${stopped.port}`,
      `127.0.0.1:${alive.port}`,
    ],
    timeout: 2000,
  });
  assert.deepEqual(client.address, { hostname: "127.0.0.1", port: alive.port });
  const lock = await client.lock("moved");
  await lock.release();
  await assert.rejects(
    connect({
      servers: [`127.0.0.1:${closedPort}`, `[127.0.0.1]:${stopped.port}`],
      timeout: 300,
    }),
    (error: Error) =>
      error instanceof ConnectionError &&
      error.message.startsWith("Cannot connect to any of 2 servers: ") &&
      error.message.includes(`:${closedPort}: `) &&
      error.message.includes(`:${stopped.port}: no answer within 300 ms`),
  );
});
