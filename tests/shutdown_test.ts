// Graceful shutdown of `pklock serve`, a real child process sent real
// signals: SIGTERM says farewell to every client and saves the state file; a
// client that never reads delays it by at most the flush grace; a second
// signal exits at once; SIGHUP is ignored.
import assert from "node:assert/strict";
import { connect, type LockClient } from "../mod.ts";
import { writeAll } from "../message/io.ts";
import { encodeFrame } from "../protocol/frame.ts";
import {
  deadline,
  inTempDir,
  RawClient,
  settingsFile,
  spawnServer,
} from "./helpers.ts";
import { ask, concat, nextOf } from "./wire.ts";

Deno.test("SIGTERM sends every client the shutdown farewell, closes them and exits 0 with the state file saved", async () => {
  await inTempDir(async (dir) => {
    const stateFile = `${dir}/state.json`;
    const { process: server, port } = await spawnServer([
      "--state-file",
      stateFile,
    ]);
    await using _server = server;
    await using holder = await RawClient.connect(port);
    await using waiter = await RawClient.connect(port);
    const lock = { command: "lock", parameters: { lockName: "x" }, id: 1 };
    const granted = await ask(holder, lock);
    const token = (granted?.result as { token: number }).token;
    assert.equal(typeof token, "number");
    await waiter.send(lock);
    // Replies come in order: once the ping is answered, the lock request
    // waits in the queue.
    assert.deepEqual(await ask(waiter, { command: "ping", id: 2 }), {
      id: 2,
      result: { status: "ok" },
    });
    const signalledAt = performance.now();
    server.kill("SIGTERM");
    for (const client of [holder, waiter]) {
      const farewell = await deadline(client.next(), 5000, "the farewell");
      assert.equal(farewell?.event, "shutdown", JSON.stringify(farewell));
      assert.equal(await nextOf(client), null);
    }
    const result = await deadline(server.result(), 5000, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    const elapsed = performance.now() - signalledAt;
    assert.ok(elapsed < 5000, `exited ${elapsed.toFixed(0)} ms after SIGTERM`);
    const state = JSON.parse(await Deno.readTextFile(stateFile));
    assert.ok(
      Number.isSafeInteger(state.reserved) && state.reserved >= token,
      `state ${JSON.stringify(state)} after token ${token}`,
    );
  });
});

/**
 * Starts `pklock serve` with a client that never reads and has megabytes of
 * replies queued in the server, more than the socket buffers take, so that
 * closing its connection must wait out the flush grace. Returns once the
 * server has dispatched every request of that client.
 */
async function serverWithStuckReader(
  dir: string,
): Promise<{
  server: Awaited<ReturnType<typeof spawnServer>>["process"];
  sink: Deno.TcpConn;
  holder: LockClient;
}> {
  // Room for every reply: the sink waits for a lock, and a connection that
  // holds state and passes the output cap stops being read.
  const config = await settingsFile(dir, {
    limits: { maxOutputBytes: 256 * 1024 * 1024 },
  });
  const { process: server, port } = await spawnServer([
    "--config",
    config,
    "--state-file",
    `${dir}/state.json`,
  ]);
  const holder = await connect({ port });
  const waiting = Promise.withResolvers<void>();
  await holder.lock("stuck-reader", {
    onContention: (waiters) => waiters > 0 && waiting.resolve(),
  });
  const sink = await Deno.connect({ hostname: "127.0.0.1", port });
  // Replies are bounded but errors quote the unknown command: 256 of them,
  // about 15 MB, where loopback's socket buffers take about 4 MB (the
  // sender's tcp_wmem maximum and the receive buffer of a peer that never
  // reads). A status report would not do: it stops at two unread pages.
  const command = "x".repeat(60_000);
  await writeAll(
    sink,
    concat([
      ...Array.from({ length: 256 }, (_, id) => encodeFrame({ command, id })),
      encodeFrame({
        command: "lock",
        parameters: { lockName: "stuck-reader" },
        id: 256,
      }),
    ]),
  );
  // The server reads a connection's requests in order: once the last one
  // waits for the holder's lock, every reply before it is queued.
  await deadline(waiting.promise, 5000, "the sink's last request");
  return { server, sink, holder };
}

Deno.test("a client that never reads delays shutdown by at most the flush grace", async () => {
  await inTempDir(async (dir) => {
    const { server, sink, holder } = await serverWithStuckReader(dir);
    await using _server = server;
    try {
      const signalledAt = performance.now();
      server.kill("SIGTERM");
      // The flush grace is a second; the bound leaves room for a slow host.
      const result = await deadline(server.result(), 5000, "the server exit");
      const elapsed = performance.now() - signalledAt;
      assert.equal(result.code, 0, result.stderr);
      // The grace's timer starts after the signal, so it is all in `elapsed`.
      assert.ok(
        elapsed >= 1000,
        `exited ${elapsed.toFixed(0)} ms after SIGTERM`,
      );
    } finally {
      sink.close();
      await holder.close();
    }
  });
});

Deno.test("a second signal during a slow shutdown exits at once with code 1", async () => {
  await inTempDir(async (dir) => {
    const { server, sink, holder } = await serverWithStuckReader(dir);
    await using _server = server;
    try {
      server.kill("SIGINT");
      // Logged once the first signal has been taken in hand.
      await server.waitFor(/Received "?SIGINT/, "stderr");
      server.kill("SIGTERM");
      const result = await deadline(server.result(), 3000, "the server exit");
      // Exit code 1 comes only from the second signal: the graceful path,
      // which waits out the stuck reader's flush grace (a second), exits 0.
      // (Here it exits in about 0.1 s; the bound is for slow hosts.)
      assert.equal(result.code, 1, result.stderr);
    } finally {
      sink.close();
      await holder.close();
    }
  });
});

Deno.test("two signals sent back to back still end the server within the flush grace", async () => {
  await inTempDir(async (dir) => {
    const { server, sink, holder } = await serverWithStuckReader(dir);
    await using _server = server;
    try {
      server.kill("SIGINT");
      server.kill("SIGTERM");
      const result = await deadline(server.result(), 5000, "the server exit");
      assert.ok([0, 1].includes(result.code), result.stderr);
    } finally {
      sink.close();
      await holder.close();
    }
  });
});

Deno.test({
  name: "two signals sent back to back exit at once with code 1",
  fn: async () => {
    await inTempDir(async (dir) => {
      const { server, sink, holder } = await serverWithStuckReader(dir);
      await using _server = server;
      try {
        server.kill("SIGINT");
        server.kill("SIGTERM");
        const result = await deadline(server.result(), 3000, "the exit");
        assert.equal(result.code, 1, result.stderr);
      } finally {
        sink.close();
        await holder.close();
      }
    });
  },
});

Deno.test("serve ignores SIGHUP, says so, and keeps its locks", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("hangup");
  server.kill("SIGHUP");
  await server.waitFor(/Received SIGHUP: ignored/, "stderr");
  await holder.ping();
  assert.equal(lock.held, true);
  await lock.release();
});
