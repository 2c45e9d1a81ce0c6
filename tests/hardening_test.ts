// Hardening, proven over real TCP and real processes: connection and lock
// limits, hostile byte streams (fuzzed with fast-check), shared-secret
// authentication, TLS, dead peers with and without heartbeats, and graceful
// shutdown. What bad_input_test.ts and message_layer_test.ts cover already
// (oversize, empty, non-JSON and invalid UTF-8 frames, a 4 GiB length prefix,
// unknown commands, wrong parameter types, the allow-list, output_overflow)
// is not repeated here.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  connect,
  ConnectionError,
  type Lock,
  type LockClient,
  LockTimeoutError,
  RemoteError,
  type StatusResult,
} from "../mod.ts";
import { parseSettings, SettingsError } from "../server/config.ts";
import { encodeFrame, type Message } from "../protocol/frame.ts";
import {
  deadline,
  RawClient,
  runCli,
  spawnHolder,
  spawnServer,
  startServer,
} from "./helpers.ts";

// ---------------------------------------------------------------------------
// Shared helpers

/** The `code` of an error reply, or `undefined`. */
function errorCode(message: Message | null): unknown {
  return (message?.error as { code?: unknown } | undefined)?.code;
}

/** The next message from the server (`null`: it closed), within 5 s. */
function nextOf(raw: RawClient): Promise<Message | null> {
  return deadline(raw.next(), 5000, "the next message or the close");
}

/** Sends a message and returns the next message from the server, within 5 s. */
function ask(raw: RawClient, message: unknown): Promise<Message | null> {
  return deadline(
    raw.request(message),
    5000,
    `the reply to ${JSON.stringify(message)}`,
  );
}

/** Whether an error is a RemoteError with this code (for assert.rejects). */
function remote(code: string): (error: Error) => boolean {
  return (error) => error instanceof RemoteError && error.code === code;
}

/** Concatenates byte arrays. */
function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** A 4-byte big-endian length prefix. */
function lengthPrefix(length: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

/**
 * Checks the lock table as `status` reports it: every lock has a holder or a
 * waiter (indeed a holder: nobody waits for a free lock), an exclusive lock
 * has exactly one holder, shared holders are all shared, holders carry a
 * token and waiters none, and no connection appears twice in one lock.
 */
function assertConsistent(status: StatusResult): void {
  for (const lock of status.locks) {
    const all = [...lock.holders, ...lock.waiters];
    const what = JSON.stringify(lock);
    assert.ok(all.length >= 1, `lock with nobody in it: ${what}`);
    assert.ok(lock.holders.length >= 1, `waiters but no holder: ${what}`);
    if (lock.mode === "exclusive") {
      assert.equal(lock.holders.length, 1, `exclusive lock: ${what}`);
    }
    for (const holder of lock.holders) {
      assert.equal(holder.mode, lock.mode, `holder's mode: ${what}`);
      assert.equal(typeof holder.token, "number", `holder's token: ${what}`);
    }
    for (const waiter of lock.waiters) {
      assert.equal(waiter.token, undefined, `waiter with a token: ${what}`);
    }
    const ids = all.map((request) => request.connectionId);
    assert.equal(new Set(ids).size, ids.length, `duplicate owner: ${what}`);
  }
}

/** Asserts that `holder` alone holds `name`, and that `other` cannot take it. */
async function assertSoleHolder(
  holder: LockClient,
  other: LockClient,
  name: string,
): Promise<void> {
  assert.equal(await other.tryLock(name), null, `"${name}" is still held`);
  const lock = (await other.status()).locks.find((lock) => lock.name === name);
  assert.ok(lock, `"${name}" is in the status`);
  assert.deepEqual(
    lock.holders.map((request) => request.connectionId),
    [holder.server.connectionId],
  );
}

/** Runs `body` with a fresh temporary folder, removed afterwards. */
async function inTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-hardening-" });
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---------------------------------------------------------------------------
// 1. Limits

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

for (
  const [where, cut] of [
    ["inside the length prefix", 2],
    ["inside the payload", 10],
  ] as const
) {
  Deno.test(`a client that closes ${where} of a frame loses its locks and nobody else does`, async () => {
    await using server = startServer();
    const port = server.addr.port;
    await using keeper = await connect({ port });
    await using waiter = await connect({ port });
    const kept = await keeper.lock("kept");
    const raw = await RawClient.connect(port);
    let granted: Promise<Lock>;
    try {
      const reply = await ask(raw, {
        command: "lock",
        parameters: { lockName: "truncated" },
        id: 1,
      });
      assert.equal((reply?.result as { status: string }).status, "ok");
      granted = waiter.lock("truncated");
      await waiter.ping();
      const frame = encodeFrame({
        command: "lock",
        parameters: { lockName: "never-finished" },
        id: 2,
      });
      await raw.write(frame.subarray(0, cut));
    } finally {
      await raw.close();
    }
    const lock = await deadline(granted, 5000, "the grant after the close");
    assert.equal(kept.lost.aborted, false);
    await assertSoleHolder(keeper, waiter, "kept");
    const status = await waiter.status();
    assert.deepEqual(status.locks.map((lock) => lock.name), [
      "kept",
      "truncated",
    ]);
    assertConsistent(status);
    await lock.release();
  });
}

Deno.test("20,000 pings in one write are all answered in order while others are served", async () => {
  const COUNT = 20_000;
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using other = await connect({ port });
  const kept = await holder.lock("kept");
  await using flooder = await RawClient.connect(port);
  const pings = concat(
    Array.from(
      { length: COUNT },
      (_, i) => encodeFrame({ command: "ping", id: i + 1 }),
    ),
  );
  const writing = flooder.write(pings);
  // Others are served while the flood is under way.
  assert.equal(await other.tryLock("kept"), null);
  const free = await deadline(other.lock("free"), 5000, "a lock meanwhile");
  await free.release();
  await writing;
  const answers = (async () => {
    const ids: unknown[] = [];
    for (let i = 0; i < COUNT; i++) {
      const reply = await flooder.next();
      assert.deepEqual(reply?.result, { status: "ok" }, `reply ${i + 1}`);
      ids.push(reply?.id);
    }
    return ids;
  })();
  const ids = await deadline(answers, 20_000, `${COUNT} pongs`);
  assert.deepEqual(ids, Array.from({ length: COUNT }, (_, i) => i + 1));
  await ask(flooder, { command: "ping", id: 0 });
  assert.equal(kept.lost.aborted, false);
  await assertSoleHolder(holder, other, "kept");
});

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
  assert.ok(messages.length >= 1, "at least one heartbeat before the drop");
  for (const message of messages) {
    assert.deepEqual(message, { event: "heartbeat" });
  }
  assert.equal(kept.lost.aborted, false);
  await assertSoleHolder(live, other, "kept");
  assert.equal((await other.status()).connections.current, 2);
});

// ---------------------------------------------------------------------------
// 2. Fuzzing a live server

const COMMANDS = [
  "hello",
  "ping",
  "status",
  "lock",
  "release",
  "unlock",
  "heartbeat",
  "fly",
  "",
  "__proto__",
  "constructor",
  "toString",
] as const;

const json = fc.jsonValue({ maxDepth: 2 });
const lockName = fc.oneof(
  { arbitrary: fc.constantFrom("precious", "fuzz-a", "fuzz-b"), weight: 3 },
  fc.string({ maxLength: 8 }),
  json,
);
const parameters = fc.oneof(
  json,
  {
    arbitrary: fc.record({
      lockName,
      mode: fc.oneof(fc.constantFrom("exclusive", "shared"), json),
      wait: fc.oneof(fc.integer({ min: 0, max: 20 }), json),
      notify: fc.oneof(fc.boolean(), json),
      secret: json,
    }, { requiredKeys: [] }),
    weight: 3,
  },
);
const request = fc.record({
  command: fc.oneof(
    { arbitrary: fc.constantFrom(...COMMANDS), weight: 4 },
    json,
  ),
  parameters,
  id: fc.oneof(fc.nat(), json),
  lockName,
}, { requiredKeys: [] });

/** Well-formed lock-protocol requests on a few names, so that locks change hands. */
const wellFormed = fc.oneof(
  fc.record({
    command: fc.constant("lock"),
    parameters: fc.record({
      lockName: fc.constantFrom("precious", "fuzz-a", "fuzz-b"),
      mode: fc.constantFrom("exclusive", "shared"),
      wait: fc.integer({ min: 0, max: 20 }),
      notify: fc.boolean(),
    }, { requiredKeys: ["lockName"] }),
    id: fc.nat(),
  }),
  fc.record({
    command: fc.constant("release"),
    parameters: fc.record({
      lockName: fc.constantFrom("precious", "fuzz-a", "fuzz-b"),
    }),
    id: fc.nat(),
  }),
  fc.record({
    command: fc.constant("unlock"),
    lockName: fc.constantFrom("precious", "fuzz-a", "fuzz-b"),
  }),
);

/** A whole frame: a request, well-formed or not, or any JSON value. */
const frame: fc.Arbitrary<Uint8Array> = fc.oneof(
  { arbitrary: wellFormed, weight: 3 },
  { arbitrary: request, weight: 3 },
  json,
).map((value) => encodeFrame(value));

/** Anything at all: random bytes, random length prefixes, frames. */
const piece: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 24 }),
  frame,
  fc.tuple(
    fc.oneof(fc.nat({ max: 64 }), fc.nat(), fc.constant(0xffffffff)),
    fc.uint8Array({ maxLength: 16 }),
  ).map(([length, body]) => concat([lengthPrefix(length), body])),
);

/**
 * What one fuzz connection sends: whole frames (then a ping whose reply shows
 * they have all been handled), then anything, both cut at random points.
 */
const stream = fc.record({
  frames: fc.array(frame, { maxLength: 6 }),
  tail: fc.array(piece, { maxLength: 4 }),
  cuts: fc.array(fc.nat(), { maxLength: 4 }),
});

const SENTINEL = "pklock-fuzz-sentinel";

/** Writes bytes in pieces cut at the cut points; `false` once the server closed. */
async function writeCut(
  raw: RawClient,
  bytes: Uint8Array,
  cuts: number[],
): Promise<boolean> {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))]
    .sort((x, y) => x - y);
  let from = 0;
  for (const to of [...points, bytes.length]) {
    if (to <= from) continue;
    try {
      await raw.write(bytes.subarray(from, to));
    } catch {
      return false; // The server has closed this connection: fine.
    }
    from = to;
  }
  return true;
}

/**
 * Opens a connection and sends the stream's frames; resolves once the server
 * has handled them all (or closed the connection), leaving the tail unsent.
 */
async function driveFrames(
  port: number,
  input: { frames: Uint8Array[]; cuts: number[] },
): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  const bytes = concat([
    ...input.frames,
    encodeFrame({ command: "ping", id: SENTINEL }),
  ]);
  if (await writeCut(raw, bytes, input.cuts)) {
    const handled = (async () => {
      for (let message; (message = await raw.next()) !== null;) {
        if (message.id === SENTINEL) return;
      }
    })();
    await deadline(handled, 5000, "the fuzz frames to be handled");
  }
  return raw;
}

Deno.test("random frames and byte streams leave the server serving and the good client's lock alone", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using good = await connect({ port });
  await using checker = await connect({ port });
  const precious = await good.lock("precious");
  await fc.assert(
    fc.asyncProperty(
      fc.array(stream, { minLength: 1, maxLength: 3 }),
      async (inputs) => {
        const raws: RawClient[] = [];
        try {
          for (const input of inputs) raws.push(await driveFrames(port, input));
          // Whatever the fuzz connections hold or wait for, the table is
          // sound and the good client still holds its lock.
          const during = await checker.status();
          assertConsistent(during);
          assert.deepEqual(
            during.locks.find((lock) => lock.name === "precious")?.holders
              .map((request) => request.connectionId),
            [good.server.connectionId],
          );
          await Promise.all(
            raws.map((raw, i) =>
              writeCut(raw, concat(inputs[i]!.tail), inputs[i]!.cuts)
            ),
          );
        } finally {
          await Promise.all(raws.map(async (raw) => {
            try {
              await raw.closeWrite();
            } catch {
              // Closed by the server already.
            }
            // The server reads all that was sent, then the end of the
            // stream, and closes: its close hook has run by then.
            await deadline(raw.ended(), 5000, "the fuzz connection to end");
            await raw.close();
          }));
        }
        await using fresh = await connect({ port });
        await fresh.ping();
        assert.equal(precious.lost.aborted, false);
        assert.equal(await checker.tryLock("precious"), null);
        const status = await checker.status();
        assertConsistent(status);
        // Nothing the fuzz connections did outlives them.
        assert.deepEqual(
          status.locks.map((lock) => ({
            name: lock.name,
            holders: lock.holders.map((request) => request.connectionId),
            waiters: lock.waiters.length,
          })),
          [{
            name: "precious",
            holders: [good.server.connectionId],
            waiters: 0,
          }],
        );
        assert.equal(status.connections.current, 3); // good, checker, fresh
      },
    ),
    { numRuns: 100 },
  );
  await precious.release();
});

// ---------------------------------------------------------------------------
// 3. Authentication

const SECRET = "correct horse battery staple";

Deno.test("with a secret, hello with the right secret opens the connection to locks", async () => {
  await using server = startServer({ secret: SECRET });
  const port = server.addr.port;
  await using a = await connect({ port, secret: SECRET });
  await using b = await connect({ port, secret: SECRET });
  const lock = await a.lock("guarded");
  assert.equal(await b.tryLock("guarded"), null);
  const status = await b.status();
  assert.equal(JSON.stringify(status).includes(SECRET), false);
  await lock.release();
  await (await b.lock("guarded")).release();
});

for (
  const [label, parameters, code] of [
    ["no secret", { protocol: 1 }, "auth_required"],
    ["no parameters", undefined, "auth_required"],
    ["a wrong secret", { protocol: 1, secret: `${SECRET}!` }, "auth_failed"],
    ["a secret that is not a string", { secret: 12345 }, "auth_failed"],
  ] as const
) {
  Deno.test(`hello with ${label} gets ${code} and the connection closes`, async () => {
    await using server = startServer({ secret: SECRET });
    await using raw = await RawClient.connect(server.addr.port);
    const reply = await ask(
      raw,
      parameters === undefined
        ? { command: "hello", id: 1 }
        : { command: "hello", parameters, id: 1 },
    );
    assert.equal(reply?.id, 1);
    assert.equal(errorCode(reply), code);
    assert.equal(await nextOf(raw), null);
  });
}

Deno.test("the client library reports a missing or wrong secret as RemoteError", async () => {
  await using server = startServer({ secret: SECRET });
  const port = server.addr.port;
  await assert.rejects(connect({ port }), remote("auth_required"));
  await assert.rejects(
    connect({ port, secret: "not the secret at all" }),
    remote("auth_failed"),
  );
});

Deno.test("any request before hello gets auth_required, is not acted on, and closes the connection", async () => {
  await using server = startServer({ secret: SECRET });
  const port = server.addr.port;
  await using good = await connect({ port, secret: SECRET });
  const precious = await good.lock("precious");
  const before = (await good.status()).locks;
  const requests: Message[] = [
    { command: "lock", parameters: { lockName: "precious" }, id: 7 },
    { command: "lock", parameters: { lockName: "intruder" }, id: 7 },
    { command: "lock", parameters: { lockName: "intruder" } }, // legacy
    { command: "release", parameters: { lockName: "precious" }, id: 7 },
    { command: "unlock", lockName: "precious" }, // legacy
    { command: "ping", id: 7 },
    { command: "status", id: 7 },
  ];
  for (const request of requests) {
    await using raw = await RawClient.connect(port);
    const reply = await ask(raw, request);
    const what = JSON.stringify(request);
    assert.equal(errorCode(reply), "auth_required", what);
    if (request.id === undefined) assert.equal(reply?.command, request.command);
    else assert.equal(reply?.id, request.id, what);
    assert.equal(reply?.result, undefined, what);
    assert.equal(await nextOf(raw), null, `closed after ${what}`);
    assert.deepEqual((await good.status()).locks, before, what);
  }
  assert.equal(precious.lost.aborted, false);
  await precious.release();
});

Deno.test({
  name:
    "an unknown command or a heartbeat before hello gets auth_required and closes the connection",
  fn: async () => {
    await using server = startServer({ secret: SECRET });
    for (
      const request of [{ command: "fly", id: 1 }, { command: "heartbeat" }]
    ) {
      await using raw = await RawClient.connect(server.addr.port);
      const reply = await ask(raw, request);
      assert.equal(errorCode(reply), "auth_required", JSON.stringify(request));
      assert.equal(await nextOf(raw), null);
    }
  },
});

Deno.test("serve never writes the secret to its logs, even at debug level", async () => {
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, `  ${SECRET}\n`);
    const config = `${dir}/settings.jsonc`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({ auth: { secretFile }, log: { level: "debug" } }),
    );
    const { process: server, port } = await spawnServer([
      "--config",
      config,
      "--log-level",
      "debug",
    ]);
    await using _server = server;
    // A wrong secret that contains the right one would show it if logged.
    await assert.rejects(
      connect({ port, secret: `${SECRET} but longer` }),
      remote("auth_failed"),
    );
    await server.waitFor(/refused: "?auth_failed/, "stderr");
    // A request that carries the secret where it does not belong: whatever
    // the answer, the message must not be logged.
    await using raw = await RawClient.connect(port);
    const reply = await ask(raw, { command: "fly", secret: SECRET, id: 1 });
    assert.equal(typeof errorCode(reply), "string");
    await using client = await connect({ port, secret: SECRET });
    const lock = await client.lock("logged");
    await server.waitFor(/Granted "logged"/, "stderr");
    await lock.release();
    server.kill("SIGTERM");
    const result = await deadline(server.result(), 10_000, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /Connection \d+ opened/);
    assert.equal(result.stderr.includes(SECRET), false, result.stderr);
    assert.equal(result.stdout.includes(SECRET), false, result.stdout);
  });
});

Deno.test("try-lock authenticates with --secret-file or PKLOCK_SECRET, and fails with exit code 4 without", async () => {
  await using server = startServer({ secret: SECRET });
  const port = String(server.addr.port);
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, `${SECRET}\n`);
    const args = ["try-lock", "cli-auth", "--port", port, "--hold", "0"];
    const runs = [
      [[...args, "--secret-file", secretFile], {}, 0],
      [args, { PKLOCK_SECRET: SECRET }, 0],
      // The file wins over the environment.
      [
        [...args, "--secret-file", secretFile],
        { PKLOCK_SECRET: "a wrong secret here" },
        0,
      ],
      [args, {}, 4, /authentication/i],
      [args, { PKLOCK_SECRET: "a wrong secret here" }, 4, /failed/i],
    ] as const;
    for (const [argv, env, code, stderr] of runs) {
      const result = await runCli([...argv], { ...env });
      const what = `${argv.join(" ")} ${JSON.stringify(env)}: ${result.stderr}`;
      assert.equal(result.code, code, what);
      if (code === 0) assert.match(result.stdout, /Got lock "cli-auth"/, what);
      if (stderr) assert.match(result.stderr, stderr, what);
    }
  });
});

// ---------------------------------------------------------------------------
// 4. TLS

/** The output of `openssl version`, or `null` when openssl cannot be run. */
async function opensslVersion(): Promise<string | null> {
  try {
    const { success, stdout } = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return success ? new TextDecoder().decode(stdout).trim() : null;
  } catch {
    return null;
  }
}

const OPENSSL = await opensslVersion();
if (OPENSSL === null) {
  console.log(
    "hardening_test.ts: skipping the TLS tests: `openssl version` failed, so no test certificates can be made",
  );
}

/** A throw-away CA and a server certificate for 127.0.0.1 and localhost. */
interface Certificates extends AsyncDisposable {
  /** The CA certificate, PEM. */
  ca: string;
  caFile: string;
  /** The server's certificate chain, PEM. */
  cert: string;
  certFile: string;
  /** The server's private key, PEM. */
  key: string;
  keyFile: string;
  dir: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(
      `openssl ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`,
    );
  }
}

async function makeCertificates(): Promise<Certificates> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-tls-" });
  try {
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    await openssl(dir, [
      "req",
      "-x509",
      ...ec,
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=pklock test CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
    ]);
    await openssl(dir, [
      "req",
      ...ec,
      "-nodes",
      "-subj",
      "/CN=localhost",
      "-keyout",
      "key.pem",
      "-out",
      "server.csr",
    ]);
    await Deno.writeTextFile(
      `${dir}/server.ext`,
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    await openssl(dir, [
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      "server.ext",
      "-out",
      "cert.pem",
    ]);
    const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
    return {
      dir,
      ca: await read("ca.pem"),
      caFile: `${dir}/ca.pem`,
      cert: await read("cert.pem"),
      certFile: `${dir}/cert.pem`,
      key: await read("key.pem"),
      keyFile: `${dir}/key.pem`,
      [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

Deno.test({
  name: "over TLS, a client that trusts the CA locks and releases",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
    });
    const port = server.addr.port;
    const tls = { caCerts: [certs.ca] };
    await using a = await connect({ port, tls });
    await using b = await connect({ port, tls });
    const lock = await a.lock("over-tls");
    assert.equal(await b.tryLock("over-tls"), null);
    const next = b.lock("over-tls");
    await lock.release();
    await (await deadline(next, 5000, "the grant over TLS")).release();
  },
});

Deno.test({
  name:
    "over TLS, a client that does not trust the certificate is refused with ConnectionError",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
    });
    const port = server.addr.port;
    await using holder = await connect({ port, tls: { caCerts: [certs.ca] } });
    const lock = await holder.lock("kept");
    // tls: true trusts the system's roots only, which did not sign this.
    await assert.rejects(connect({ port, tls: true }), ConnectionError);
    assert.equal(lock.lost.aborted, false);
    await using other = await connect({ port, tls: { caCerts: [certs.ca] } });
    await assertSoleHolder(holder, other, "kept");
  },
});

Deno.test({
  name:
    "a plain-TCP client of a TLS server gets nothing usable and harms no one",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
    });
    const port = server.addr.port;
    const tls = { caCerts: [certs.ca] };
    await using holder = await connect({ port, tls });
    const lock = await holder.lock("kept");
    // The raw client's frame decoder makes nothing of a TLS alert either.
    await using plain = await RawClient.connect(port);
    await plain.write(
      encodeFrame({ command: "lock", parameters: { lockName: "kept" }, id: 1 }),
    );
    assert.equal(await deadline(plain.next(), 5000, "the close"), null);
    await plain.ended();
    // The library over plain TCP: the connection is lost before any reply.
    await assert.rejects(connect({ port }), ConnectionError);
    assert.equal(lock.lost.aborted, false);
    await using other = await connect({ port, tls });
    await assertSoleHolder(holder, other, "kept");
  },
});

Deno.test({
  name:
    "serve with tls.certFile and tls.keyFile works end to end with try-lock --ca-file",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    const config = `${certs.dir}/settings.jsonc`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        tls: { certFile: certs.certFile, keyFile: certs.keyFile },
      }),
    );
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const args = ["try-lock", "cli-tls", "--port", String(port), "--hold", "0"];
    const ok = await runCli([...args, "--ca-file", certs.caFile]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Got lock "cli-tls" \(token \d+\)/);
    assert.match(ok.stdout, /Released lock "cli-tls"/);
    // Without the CA the certificate is not trusted; without TLS the server
    // understands nothing. Either way: exit code 4, not a hang.
    for (const extra of [["--tls"], []]) {
      const refused = await runCli([...args, ...extra]);
      assert.equal(refused.code, 4, `${extra}: ${refused.stderr}`);
    }
  },
});

// ---------------------------------------------------------------------------
// 5. Dead peers

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

// ---------------------------------------------------------------------------
// 6. Graceful shutdown

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
 * replies queued, so that closing its connection must wait out the flush
 * grace. Returns once the server has queued them.
 */
async function serverWithStuckReader(
  dir: string,
): Promise<{
  server: Awaited<ReturnType<typeof spawnServer>>["process"];
  sink: Deno.TcpConn;
  holder: LockClient;
}> {
  const config = `${dir}/settings.jsonc`;
  // Room for far more queued output than the socket buffers hold.
  await Deno.writeTextFile(
    config,
    JSON.stringify({ limits: { maxOutputBytes: 256 * 1024 * 1024 } }),
  );
  const { process: server, port } = await spawnServer([
    "--config",
    config,
    "--state-file",
    `${dir}/state.json`,
  ]);
  // Many long lock names make each status reply large (about 100 KB).
  const holder = await connect({ port });
  await Promise.all(
    Array.from(
      { length: 250 },
      (_, i) => holder.lock(`${String(i).padStart(4, "0")}-${"x".repeat(250)}`),
    ),
  );
  const sink = await Deno.connect({ hostname: "127.0.0.1", port });
  // 150 status requests, about 15 MB of replies, in one write the server
  // reads at once; reading the first byte shows that it has queued them all.
  await sink.write(
    concat(
      Array.from(
        { length: 150 },
        (_, i) => encodeFrame({ command: "status", id: i }),
      ),
    ),
  );
  const first = new Uint8Array(1);
  assert.equal(await sink.read(first), 1);
  return { server, sink, holder };
}

Deno.test("a client that never reads delays shutdown by at most the flush grace", async () => {
  await inTempDir(async (dir) => {
    const { server, sink, holder } = await serverWithStuckReader(dir);
    await using _server = server;
    try {
      server.kill("SIGTERM");
      // The flush grace is a second; the bound leaves room for a slow host.
      const result = await deadline(server.result(), 5000, "the server exit");
      assert.equal(result.code, 0, result.stderr);
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
      // which would still be waiting out the stuck reader's flush grace,
      // exits 0. (Here it exits in about 0.1 s; the bound is for slow hosts.)
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

Deno.test("with auth on, a connection that never says hello is closed after the deadline", async () => {
  await using server = startServer({ secret: SECRET, authDeadline: 100 });
  await using silent = await RawClient.connect(server.addr.port);
  const reply = await deadline(silent.next(), 5000, "the deadline's refusal");
  assert.equal((reply?.error as { code: string }).code, "auth_required");
  await deadline(silent.ended(), 5000, "the close after the refusal");
  const status = server.status();
  assert.equal(status.connections.current, 0);
});

Deno.test({
  name:
    "under TLS, a silent peer refused for a connection limit does not hold up shutdown",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    const server = startServer({
      tls: { cert: certs.cert, key: certs.key },
      maxConnections: 1,
      metrics: {},
    });
    const port = server.addr.port;
    await using holder = await connect({ port, tls: { caCerts: [certs.ca] } });
    const lock = await holder.lock("tls-limit");
    // A peer that never does the TLS handshake, beyond the limit.
    await using _silent = await RawClient.connect(port);
    const refused = async () => {
      while (
        !(await server.metrics!.render()).includes(
          'pklock_connections_rejected_total{cause="limit"} 1',
        )
      ) await holder.ping();
    };
    await deadline(refused(), 5000, "the refusal");
    assert.equal(server.status().connections.current, 1);
    assert.equal(lock.held, true);
    // Deno closes a TLS socket that never handshook only lazily, so the
    // peer may not see the close yet; what matters is that shutdown does not
    // wait for it.
    await deadline(server.close(), 5000, "the server to close");
  },
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

Deno.test("a server whose standard error is gone keeps serving", async () => {
  const fixture = new URL("./fixtures/log_without_stderr.ts", import.meta.url)
    .pathname;
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fixture],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.equal(code, 0);
  assert.equal(new TextDecoder().decode(stdout), "still here\n");
});
