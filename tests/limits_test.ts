// Connection and lock limits, proven over real TCP: the connection over a
// limit is turned away, the request over a limit is refused, and everybody
// else and their locks are untouched. Also the durations settings and flags
// refuse because no timer can wait them.
import assert from "node:assert/strict";
import { connect, ConnectionError } from "../mod.ts";
import { parseSettings, SettingsError } from "../server/config.ts";
import { assertSoleHolder, remote } from "./assertions.ts";
import { getHeapStatistics } from "node:v8";
import {
  defaultRequestBudget,
  REQUEST_COST_BYTES,
  REQUEST_HEAP_SHARE,
} from "../server/request_budget.ts";
import {
  deadline,
  inTempDir,
  RawClient,
  runCli,
  settingsFile,
  spawnServer,
  startServer,
} from "./helpers.ts";
import { ask, errorCode, nextOf } from "./wire.ts";

Deno.test("maxConnections turns the extra connection away and spares the others", async () => {
  await using server = startServer({ maxConnections: 2 });
  const port = server.addr.port;
  await using a = await connect({ port });
  const b = await connect({ port });
  try {
    const kept = await a.lock("kept");
    await b.lock("handover");

    await using extra = await RawClient.connect(port);
    const refusal = await deadline(extra.next(), 5000, "the refusal");
    assert.equal(errorCode(refusal), "too_many_connections");
    assert.match(
      (refusal?.error as { message: string }).message,
      /limit is 2/,
    );
    assert.equal(await nextOf(extra), null, "then the connection closes");
    await assert.rejects(connect({ port }), ConnectionError);

    // The two connections and their locks are untouched.
    assert.equal(kept.lost.aborted, false);
    const status = await a.status();
    assert.equal(status.connections.current, 2);
    assert.deepEqual(
      status.locks.map((lock) => [lock.name, lock.holders[0]?.connectionId]),
      [["handover", b.server.connectionId], ["kept", a.server.connectionId]],
    );

    // Once one closes (the handover proves the server has seen it), a new
    // connection is accepted, and the limit holds again.
    const handedOver = a.lock("handover");
    await b.close();
    await deadline(handedOver, 5000, "the handover after b closed");
    await using c = await connect({ port });
    await c.ping();
    await using again = await RawClient.connect(port);
    assert.equal(errorCode(await nextOf(again)), "too_many_connections");
  } finally {
    await b.close();
  }
});

/** Whether this host can listen on and connect to ::1. */
function hasIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("maxConnectionsPerIp turns away the extra connection from that address only", async () => {
  // Listening on "::" (dual stack) lets the test connect from two addresses:
  // 127.0.0.1 (seen as ::ffff:127.0.0.1) and ::1.
  const ipv6 = hasIpv6Loopback();
  await using server = startServer({
    hostname: ipv6 ? "::" : "127.0.0.1",
    maxConnectionsPerIp: 2,
  });
  const port = server.addr.port;
  await using a = await connect({ port });
  const b = await connect({ port });
  try {
    const kept = await a.lock("kept");
    await b.lock("handover");
    await using extra = await RawClient.connect(port);
    const refusal = await nextOf(extra);
    assert.equal(errorCode(refusal), "too_many_connections");
    assert.match(
      (refusal?.error as { message: string }).message,
      /from (::ffff:)?127\.0\.0\.1: the limit is 2/,
    );
    assert.equal(await nextOf(extra), null);
    if (ipv6) {
      // Another address is still welcome.
      await using v6 = await connect({ hostname: "::1", port });
      assert.equal(await v6.tryLock("kept"), null);
    }
    assert.equal(kept.lost.aborted, false);
    await assertSoleHolder(a, b, "kept");

    const handedOver = a.lock("handover");
    await b.close();
    await deadline(handedOver, 5000, "the handover after b closed");
    await using c = await connect({ port });
    await assertSoleHolder(a, c, "kept");
  } finally {
    await b.close();
  }
});

Deno.test("maxLocksPerConnection refuses one request with limit_exceeded and keeps the connection", async () => {
  await using server = startServer({ maxLocksPerConnection: 2 });
  const port = server.addr.port;
  await using a = await connect({ port });
  await using b = await connect({ port });
  const bHeld = await b.lock("b-held");
  const first = await a.lock("a-1");
  // A waiting request counts as much as a held one.
  const waiting = a.lock("b-held");
  await a.ping();
  await assert.rejects(a.lock("a-3"), remote("limit_exceeded"));
  await assert.rejects(a.tryLock("a-3"), remote("limit_exceeded"));

  // The connection stays open; its lock and its queued request are intact.
  await a.ping();
  assert.equal(first.lost.aborted, false);
  await assertSoleHolder(a, b, "a-1");
  const status = await b.status();
  assert.equal(status.locks.some((lock) => lock.name === "a-3"), false);
  assert.deepEqual(
    status.locks.find((lock) => lock.name === "b-held")?.waiters.map((
      request,
    ) => request.connectionId),
    [a.server.connectionId],
  );
  await bHeld.release();
  const second = await deadline(waiting, 5000, "the queued request's grant");

  // Below the limit again, the same connection may ask once more.
  await first.release();
  const third = await a.lock("a-3");
  await third.release();
  await second.release();
});

Deno.test("an over-long name in lock, release and legacy unlock is refused and the connection keeps its locks", async () => {
  await using server = startServer({ maxLockNameLength: 8 });
  const port = server.addr.port;
  await using raw = await RawClient.connect(port);
  await using other = await connect({ port });
  const long = "123456789";
  assert.deepEqual(
    await ask(raw, {
      command: "lock",
      parameters: { lockName: "mine" },
      id: 1,
    }),
    { id: 1, result: { status: "ok", token: 1 } },
  );
  const lockReply = await ask(raw, {
    command: "lock",
    parameters: { lockName: long },
    id: 2,
  });
  assert.equal(lockReply?.id, 2);
  assert.equal(errorCode(lockReply), "name_too_long");
  const releaseReply = await ask(raw, {
    command: "release",
    parameters: { lockName: long },
    id: 3,
  });
  assert.equal(releaseReply?.id, 3);
  assert.equal(errorCode(releaseReply), "name_too_long");
  assert.deepEqual(await ask(raw, { command: "unlock", lockName: long }), {
    attempted: "unlock",
    result: "invalid",
  });
  assert.deepEqual(await ask(raw, { command: "ping", id: 4 }), {
    id: 4,
    result: { status: "ok" },
  });
  assert.equal(await other.tryLock("mine"), null);
  assert.deepEqual((await other.status()).locks.map((lock) => lock.name), [
    "mine",
  ]);
});

Deno.test("settings and flags refuse durations no timer can wait", async () => {
  const over = 2 ** 31;
  for (
    const text of [
      `{ "alarms": { "holdTime": ${over} } }`,
      `{ "heartbeat": { "interval": 1000, "timeout": ${over} } }`,
    ]
  ) {
    assert.throws(() => parseSettings(text, "long.jsonc"), SettingsError, text);
  }
  const result = await runCli(["try-lock", "x", "--hold", "3000000"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /at most 2147483\.647 seconds/);
});

Deno.test("the request budget refuses past the server's and one address's totals with limit_exceeded, and everyone else carries on", async () => {
  const ipv6 = hasIpv6Loopback();
  await using server = startServer({
    hostname: ipv6 ? "::" : "127.0.0.1",
    maxRequests: 6,
    maxRequestsPerIp: ipv6 ? 4 : 6,
  });
  const port = server.addr.port;
  await using a = await connect({ port });
  await using b = await connect({ port });
  const a1 = await a.lock("a-1");
  const a2 = await a.lock("a-2");
  const b1 = await b.lock("b-1");
  // A queued request counts as much as a held one.
  const queued = b.lock("a-1");
  await b.ping();
  if (ipv6) {
    // 127.0.0.1's connections hold and queue 4: its budget.
    await assert.rejects(
      a.lock("a-3"),
      (error: Error) =>
        remote("limit_exceeded")(error) &&
        /Connections from (::ffff:)?127\.0\.0\.1 hold and queue 4 requests, the budget of one address/
          .test(error.message),
    );
    await using v6 = await connect({ hostname: "::1", port });
    await v6.lock("v6-1");
    await v6.lock("v6-2");
    // 6 in all: the server's budget, for every address.
    await assert.rejects(
      v6.lock("v6-3"),
      /The server holds and queues 6 requests, its budget/,
    );
  } else {
    await a.lock("a-3");
    await b.lock("b-2");
    await assert.rejects(
      a.lock("a-4"),
      /The server holds and queues 6 requests, its budget/,
    );
  }
  await assert.rejects(b.tryLock("b-3"), remote("limit_exceeded"));
  // Nobody lost anything, and the queue still moves.
  for (const lock of [a1, a2, b1]) assert.equal(lock.lost.aborted, false);
  await a1.release();
  const granted = await deadline(queued, 5000, "the queued request's grant");
  // Below the budget again, a request is admitted.
  await a2.release();
  await (await a.lock("a-5")).release();
  await granted.release();
});

Deno.test("the default request budget is derived from the heap limit and logged at start-up", async () => {
  const heap = getHeapStatistics().heap_size_limit;
  const derived = defaultRequestBudget();
  assert.equal(
    derived.maxRequests,
    Math.floor(heap * REQUEST_HEAP_SHARE / REQUEST_COST_BYTES),
  );
  assert.equal(derived.maxRequestsPerIp, Math.floor(derived.maxRequests / 2));
  // A heap of 4 GiB gives about 2 M: well below the 5-6.4 M locks at which
  // a server without a budget died of heap exhaustion.
  assert.ok(derived.maxRequests > 100_000, String(derived.maxRequests));
  await using server = startServer();
  assert.deepEqual(server.budget, derived);
  const { process: serve } = await spawnServer();
  await using _serve = serve;
  const [, inAll, perIp] = await serve.waitFor(
    /Budget of lock requests held and queued: (\d+) in all, (\d+) per IP address/,
    "stderr",
  );
  assert.ok(
    Number(inAll) > 100_000 && Number(perIp) === Math.floor(Number(inAll) / 2),
  );
});

Deno.test("serve takes the request budget from limits.maxRequests and limits.maxRequestsPerIp", async () => {
  await inTempDir(async (dir) => {
    const config = await settingsFile(dir, {
      limits: { maxRequests: 3, maxRequestsPerIp: 1 },
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    await server.waitFor(
      /Budget of lock requests held and queued: 3 in all, 1 per IP address/,
      "stderr",
    );
    await using client = await connect({ port });
    const held = await client.lock("one");
    await assert.rejects(
      client.lock("two"),
      /Connections from 127\.0\.0\.1 hold and queue 1 requests, the budget of one address/,
    );
    await server.waitFor(
      /Refused a lock request of connection \d+ from "127\.0\.0\.1:\d+": the "ip" budget of requests is used up/,
      "stderr",
    );
    await held.release();
    await (await client.lock("two")).release();
  });
});
