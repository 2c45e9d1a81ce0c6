// The client library's surface against a real server: argument checks,
// turns for one name within one client, typed loss reasons, withLock and
// typed events.
import assert from "node:assert/strict";
import {
  connect,
  type Lock,
  LockLostError,
  LockTimeoutError,
  type LostReason,
  RequestRefusedError,
} from "../mod.ts";
import { deadline, spawnServer, startServer } from "./helpers.ts";

const ADMIN = "an admin secret of some length";

/** Resolves with the lost reason once the lock's lost signal fires. */
function lostReason(lock: Lock): Promise<LostReason> {
  return deadline(
    new Promise((resolve) =>
      lock.lost.addEventListener(
        "abort",
        () => resolve((lock.lost.reason as LockLostError).reason),
        { once: true },
      )
    ),
    5000,
    `the loss of "${lock.name}"`,
  );
}

Deno.test("invalid lock() arguments get a TypeError or RangeError before any round trip", async () => {
  await using server = startServer();
  const client = await connect({ port: server.addr.port });
  // Closed: a request that reached the connection would get ConnectionError.
  await client.close();
  const cases: Array<[unknown, unknown, ErrorConstructor]> = [
    ["", {}, RangeError],
    [7, {}, TypeError],
    ["x", { wait: -1 }, RangeError],
    ["x", { wait: 1.5 }, RangeError],
    ["x", { wait: 2 ** 31 }, RangeError],
    ["x", { wait: Number.NaN }, RangeError],
    ["x", { wait: "5" }, TypeError],
    ["x", { mode: "both" }, RangeError],
    ["x", { signal: {} }, TypeError],
    ["x", { onPosition: 1 }, TypeError],
    ["x", null, TypeError],
  ];
  for (const [name, options, type] of cases) {
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      client.lock(name as any, options as any),
      (error: Error) => error.constructor === type,
      `lock(${JSON.stringify(name)}, ${JSON.stringify(options)})`,
    );
  }
  await assert.rejects(client.tryLock(""), RangeError);
  await assert.rejects(client.forceRelease("", ADMIN), RangeError);
});

Deno.test("invalid connect() options get a TypeError or RangeError before connecting", async () => {
  const cases: Array<[Record<string, unknown>, ErrorConstructor]> = [
    [{ port: 70000 }, RangeError],
    [{ port: 0 }, RangeError],
    [{ timeout: 0 }, RangeError],
    [{ timeout: 2.5 }, RangeError],
    [{ servers: [] }, TypeError],
    [{ servers: "127.0.0.1" }, TypeError],
    [{ servers: [1] }, TypeError],
    [{ servers: ["a:b:c"] }, RangeError],
    [{ servers: ["a:99999"] }, RangeError],
    [{ servers: ["a"], hostname: "b" }, TypeError],
    [{ signal: "stop" }, TypeError],
  ];
  for (const [options, type] of cases) {
    await assert.rejects(
      connect(options),
      (error: Error) => error.constructor === type,
      JSON.stringify(options),
    );
  }
});

Deno.test("two requests for one name from one client take turns, behind other clients", async (t) => {
  await using server = startServer();
  await using a = await connect({ port: server.addr.port });
  await using b = await connect({ port: server.addr.port });
  const first = await a.lock("shared-name");

  await t.step(
    "tryLock and a bounded wait fail at once, in the client",
    async () => {
      assert.equal(await a.tryLock("shared-name"), null);
      await assert.rejects(
        a.lock("shared-name", { wait: 50 }),
        (error: Error) =>
          error instanceof LockTimeoutError &&
          error.message ===
            'Cannot acquire lock "shared-name": timed out after 50 ms, held or waited for elsewhere in this program',
      );
      const reason = new Error("not now");
      await assert.rejects(
        a.lock("shared-name", { signal: AbortSignal.abort(reason) }),
        (error) => error === reason,
      );
      assert.equal(first.held, true);
    },
  );

  await t.step(
    "the second waits for the first, then queues behind b",
    async () => {
      const order: string[] = [];
      const second = a.lock("shared-name").then((lock) => {
        order.push("a again");
        return lock;
      });
      const other = b.lock("shared-name").then((lock) => {
        order.push("b");
        return lock;
      });
      await b.ping(); // b is queued on the server
      assert.deepEqual(order, []);
      await first.release(); // b is next; a's second request goes out now
      const bLock = await other;
      assert.deepEqual(order, ["b"]);
      await bLock.release();
      const again = await second;
      assert.deepEqual(order, ["b", "a again"]);
      assert.ok(again.token > bLock.token);
      await again.release();
    },
  );
});

Deno.test("lost.reason says why: shutdown, forced_release, refused, peer_closed, closed", async (t) => {
  await t.step("shutdown", async () => {
    const server = startServer();
    await using client = await connect({ port: server.addr.port });
    const lost = lostReason(await client.lock("s"));
    await server.close();
    assert.equal(await lost, "shutdown");
  });

  await t.step("forced_release, for every lock of the connection", async () => {
    await using server = startServer({ adminSecret: ADMIN });
    await using holder = await connect({ port: server.addr.port });
    await using operator = await connect({ port: server.addr.port });
    const forced = await holder.lock("forced");
    const bystander = await holder.lock("bystander");
    const lost = [lostReason(forced), lostReason(bystander)];
    await operator.forceRelease("forced", ADMIN);
    assert.deepEqual(await Promise.all(lost), [
      "forced_release",
      "forced_release",
    ]);
    assert.equal(
      (bystander.lost.reason as Error).message,
      'Lost lock "bystander": an operator forced the release of lock "forced"',
    );
  });

  await t.step(
    "refused: a wrong admin secret closes the asker's connection",
    async () => {
      await using server = startServer({ adminSecret: ADMIN });
      await using client = await connect({ port: server.addr.port });
      const lost = lostReason(await client.lock("mine"));
      await assert.rejects(
        client.forceRelease("mine", "wrong"),
        (error: Error) =>
          error instanceof RequestRefusedError && error.code === "auth_failed",
      );
      assert.equal(await lost, "refused");
    },
  );

  await t.step("peer_closed: the server process is killed", async () => {
    const { process, port } = await spawnServer();
    await using _server = process;
    await using client = await connect({ port });
    const lost = lostReason(await client.lock("k"));
    process.kill("SIGKILL");
    assert.equal(await lost, "peer_closed");
  });

  await t.step("closed: this program closed the client", async () => {
    await using server = startServer();
    const client = await connect({ port: server.addr.port });
    const lost = lostReason(await client.lock("c"));
    await client.close();
    assert.equal(await lost, "closed");
  });
});

Deno.test("withLock() runs fn with the lost signal and the lock, and releases after", async (t) => {
  await using server = startServer({ adminSecret: ADMIN });
  await using client = await connect({ port: server.addr.port });
  await using other = await connect({ port: server.addr.port });

  await t.step("returns fn's result, and the lock is free after", async () => {
    const result = await client.withLock("job", async (lost, lock) => {
      assert.equal(lost, lock.lost);
      assert.equal(lock.held, true);
      assert.equal(await other.tryLock("job"), null);
      return 42;
    }, { wait: 1000 });
    assert.equal(result, 42);
    const lock = await other.tryLock("job");
    assert.ok(lock);
    await lock.release();
  });

  await t.step("releases when fn throws, and rethrows", async () => {
    const failure = new Error("job failed");
    await assert.rejects(
      client.withLock("job", () => {
        throw failure;
      }),
      (error) => error === failure,
    );
    const lock = await other.tryLock("job");
    assert.ok(lock);
    await lock.release();
  });

  await t.step(
    "rejects with LockLostError when the lock was lost during fn",
    async () => {
      const victim = await connect({ port: server.addr.port });
      await assert.rejects(
        victim.withLock("job", async (lost) => {
          await other.forceRelease("job", ADMIN);
          if (!lost.aborted) {
            await new Promise((resolve) =>
              lost.addEventListener("abort", resolve, { once: true })
            );
          }
          return "done anyway";
        }),
        (error: Error) =>
          error instanceof LockLostError && error.reason === "forced_release",
      );
      await victim.closed;
    },
  );
});

Deno.test("Lock dispatches typed contention events", async () => {
  await using server = startServer();
  await using holder = await connect({ port: server.addr.port });
  await using waiter = await connect({ port: server.addr.port });
  const counts: number[] = [];
  const lock = await holder.lock("busy", { onContention: () => {} });
  const seen = new Promise<number>((resolve) =>
    lock.addEventListener("contention", (event) => {
      counts.push(event.detail.waiters);
      resolve(event.detail.waiters);
    })
  );
  const waiting = waiter.lock("busy");
  assert.equal(await deadline(seen, 5000, "a contention event"), 1);
  await lock.release();
  await (await waiting).release();
  assert.deepEqual(counts, [1]);
});
