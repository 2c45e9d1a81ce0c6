// The legacy pkLockServer exchanges, byte for byte, with hand-built frames: the
// compatibility contract with existing PHP clients.
import assert from "node:assert/strict";
import { writeAll } from "../message/io.ts";
import { RawClient, startServer } from "./helpers.ts";
import { errorCode, frameOf } from "./wire.ts";

const encoder = new TextEncoder();

Deno.test("legacy lock is granted with status ok and a token", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  await client.write(
    frameOf('{"command":"lock","parameters":{"lockName":"NAME"},"id":7}'),
  );
  const reply = await client.next();
  assert.deepEqual(reply, { id: 7, result: { status: "ok", token: 1 } });
});

Deno.test("legacy lock reply is a 4-byte big-endian length and UTF-8 JSON", async () => {
  await using server = startServer();
  const conn = await Deno.connect({ port: server.addr.port });
  try {
    await writeAll(
      conn,
      frameOf('{"command":"lock","parameters":{"lockName":"ä"},"id":1}'),
    );
    const expected = encoder.encode(
      '{"id":1,"result":{"status":"ok","token":1}}',
    );
    const bytes = new Uint8Array(4 + expected.length);
    let read = 0;
    while (read < bytes.length) {
      const n = await conn.read(bytes.subarray(read));
      assert.notEqual(n, null);
      read += n!;
    }
    assert.equal(new DataView(bytes.buffer).getUint32(0), expected.length);
    assert.deepEqual(bytes.subarray(4), expected);
  } finally {
    conn.close();
  }
});

Deno.test("a legacy lock request waits silently in FIFO order and is granted on unlock", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await RawClient.connect(port);
  await using first = await RawClient.connect(port);
  await using second = await RawClient.connect(port);
  const lock = (id: number) => ({
    command: "lock",
    parameters: { lockName: "jobs" },
    id,
  });
  assert.equal((await holder.request(lock(1)))?.id, 1);
  await first.send(lock(1));
  // Any reply on the same connection comes after everything sent before it:
  // the ping's reply coming first shows the lock request is queued, unanswered.
  assert.deepEqual(await first.request({ command: "ping", id: 2 }), {
    id: 2,
    result: { status: "ok" },
  });
  await second.send(lock(1));
  assert.equal((await second.request({ command: "ping", id: 2 }))?.id, 2);

  assert.deepEqual(
    await holder.request({ command: "unlock", lockName: "jobs" }),
    { attempted: "unlock", result: "ok", lockName: "jobs" },
  );
  assert.deepEqual(await first.next(), {
    id: 1,
    result: { status: "ok", token: 2 },
  });
  assert.deepEqual(
    await first.request({ command: "unlock", lockName: "jobs" }),
    { attempted: "unlock", result: "ok", lockName: "jobs" },
  );
  assert.deepEqual(await second.next(), {
    id: 1,
    result: { status: "ok", token: 3 },
  });
});

Deno.test("legacy unlock of a lock not held answers notFound", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  await client.write(frameOf('{"command":"unlock","lockName":"NAME"}'));
  assert.deepEqual(await client.next(), {
    attempted: "unlock",
    result: "notFound",
    lockName: "NAME",
  });
});

Deno.test("legacy unlock of a lock held by another connection answers notFound", async () => {
  await using server = startServer();
  await using holder = await RawClient.connect(server.addr.port);
  await using other = await RawClient.connect(server.addr.port);
  await holder.request({
    command: "lock",
    parameters: { lockName: "x" },
    id: 1,
  });
  assert.deepEqual(await other.request({ command: "unlock", lockName: "x" }), {
    attempted: "unlock",
    result: "notFound",
    lockName: "x",
  });
});

Deno.test("legacy unlock without lockName answers invalid", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  await client.write(frameOf('{"command":"unlock"}'));
  assert.deepEqual(await client.next(), {
    attempted: "unlock",
    result: "invalid",
  });
});

Deno.test("legacy lock without parameters.lockName answers status invalid", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  for (
    const json of [
      '{"command":"lock","id":3}',
      '{"command":"lock","parameters":{},"id":3}',
      '{"command":"lock","parameters":{"lockName":42},"id":3}',
      '{"command":"lock","parameters":"NAME","id":3}',
    ]
  ) {
    await client.write(frameOf(json));
    const reply = await client.next();
    assert.equal(reply?.id, 3, json);
    assert.deepEqual(reply?.result, { status: "invalid" }, json);
    assert.equal(
      (reply?.error as { code: string }).code,
      "invalid_parameters",
    );
  }
});

Deno.test("legacy unlock withdraws a queued request, which is answered cancelled", async () => {
  await using server = startServer();
  await using holder = await RawClient.connect(server.addr.port);
  await using waiter = await RawClient.connect(server.addr.port);
  await holder.request({
    command: "lock",
    parameters: { lockName: "q" },
    id: 1,
  });
  await waiter.send({ command: "lock", parameters: { lockName: "q" }, id: 5 });
  await waiter.send({ command: "unlock", lockName: "q" });
  assert.deepEqual(await waiter.next(), {
    id: 5,
    result: { status: "cancelled" },
  });
  assert.deepEqual(await waiter.next(), {
    attempted: "unlock",
    result: "ok",
    lockName: "q",
  });
  // Nothing is left queued: the holder's unlock grants nobody, and a third
  // client gets the lock at once.
  await holder.request({ command: "unlock", lockName: "q" });
  await using third = await RawClient.connect(server.addr.port);
  assert.equal(
    ((await third.request({
      command: "lock",
      parameters: { lockName: "q" },
      id: 1,
    }))?.result as { status: string }).status,
    "ok",
  );
});

Deno.test("a closed connection loses its locks and queued requests; next waiters are granted at once", async () => {
  await using server = startServer();
  const port = server.addr.port;
  const holder = await RawClient.connect(port);
  await using waiterA = await RawClient.connect(port);
  await using waiterB = await RawClient.connect(port);
  const lock = (lockName: string, id: number) => ({
    command: "lock",
    parameters: { lockName },
    id,
  });
  await holder.request(lock("a", 1));
  await holder.request(lock("b", 2));
  await waiterA.send(lock("a", 1));
  await waiterB.request(lock("c", 1));
  await waiterB.send(lock("b", 2));
  await holder.send(lock("c", 3));
  await holder.request({ command: "ping", id: 4 });
  await waiterA.request({ command: "ping", id: 5 });
  await waiterB.request({ command: "ping", id: 6 });

  await holder.close();
  assert.deepEqual((await waiterA.next())?.result, { status: "ok", token: 4 });
  assert.deepEqual((await waiterB.next())?.result, { status: "ok", token: 5 });
  // The dead connection's queued request for "c" is gone: when its holder
  // lets go, nobody is granted, and a newcomer takes it at once.
  assert.deepEqual(
    await waiterB.request({ command: "unlock", lockName: "c" }),
    {
      attempted: "unlock",
      result: "ok",
      lockName: "c",
    },
  );
  await using newcomer = await RawClient.connect(port);
  assert.deepEqual(
    (await newcomer.request({
      ...lock("c", 1),
      parameters: { lockName: "c", wait: 0 },
    }))
      ?.result,
    { status: "ok", token: 6 },
  );
});

Deno.test("a legacy re-lock of a held lock is answered ok, as pkLockServer did, and one unlock frees it", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using php = await RawClient.connect(port);
  await using other = await RawClient.connect(port);
  // pkLockClient numbers its RPCs from 0 and sends unlock without an id.
  await php.write(
    frameOf('{"command":"lock","parameters":{"lockName":"jobs"},"id":0}'),
  );
  assert.deepEqual(await php.next(), {
    id: 0,
    result: { status: "ok", token: 1 },
  });
  await php.write(
    frameOf('{"command":"lock","parameters":{"lockName":"jobs"},"id":1}'),
  );
  assert.deepEqual(await php.next(), {
    id: 1,
    result: { status: "ok", token: 1 },
  });
  await other.send({
    command: "lock",
    parameters: { lockName: "jobs" },
    id: 0,
  });
  assert.equal((await other.request({ command: "ping", id: 1 }))?.id, 1);
  await php.write(frameOf('{"command":"unlock","lockName":"jobs"}'));
  assert.deepEqual(await php.next(), {
    attempted: "unlock",
    result: "ok",
    lockName: "jobs",
  });
  assert.deepEqual(await other.next(), {
    id: 0,
    result: { status: "ok", token: 2 },
  });
});

Deno.test("a re-lock from a connection that sent hello is still refused already_held", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  await client.request({ command: "hello", id: 0 });
  const lock = { command: "lock", parameters: { lockName: "jobs" } };
  assert.deepEqual(await client.request({ ...lock, id: 1 }), {
    id: 1,
    result: { status: "ok", token: 1 },
  });
  const reply = await client.request({ ...lock, id: 2 });
  assert.equal(reply?.result, undefined);
  assert.equal(errorCode(reply), "already_held");
});
