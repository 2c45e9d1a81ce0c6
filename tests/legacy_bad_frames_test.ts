// A legacy connection (one that never sent hello) whose framing is intact
// keeps its locks after a frame it cannot read, as the PHP pkLockServer
// ignored such frames. pkLockClient sends one when json_encode fails (a
// Latin-1 lock name): a zero-length frame. Frames are built here exactly as
// pkLockClient writes them: pack("N", strlen($json)) . $json, ids from 0.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { RawClient, startServer } from "./helpers.ts";
import { ask, errorCode, frameOf, nextOf } from "./wire.ts";

/** What pkLockClient writes when json_encode returns false. */
const FAILED_ENCODE = new Uint8Array([0, 0, 0, 0]);

Deno.test("a legacy holder keeps its lock after a zero-length frame and its failed unlock", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using php = await RawClient.connect(port);
  await using other = await connect({ port });
  await php.write(
    frameOf('{"command":"lock","parameters":{"lockName":"report"},"id":0}'),
  );
  assert.equal(
    ((await nextOf(php))?.result as { status: string }).status,
    "ok",
  );
  // lock("rapport-\xe9t\xe9"): the RPC with id 1, then, once its time limit
  // passes, the unlock that "gives up that lock if we have it": both fail to
  // encode.
  await php.write(FAILED_ENCODE);
  assert.deepEqual(await nextOf(php), {
    error: { code: "invalid_json", message: "Frame is not valid JSON" },
  });
  await php.write(FAILED_ENCODE);
  assert.equal(errorCode(await nextOf(php)), "invalid_json");
  assert.equal(await other.tryLock("report"), null, "still held");
  // The connection carries on: its next lock and unlock work as before.
  await php.write(
    frameOf('{"command":"lock","parameters":{"lockName":"other"},"id":2}'),
  );
  assert.equal(
    ((await nextOf(php))?.result as { status: string }).status,
    "ok",
  );
  await php.write(frameOf('{"command":"unlock","lockName":"report"}'));
  assert.deepEqual(await nextOf(php), {
    attempted: "unlock",
    result: "ok",
    lockName: "report",
  });
  const lock = await other.tryLock("report");
  assert.notEqual(lock, null);
  await lock!.release();
});

for (
  const [label, bytes, code] of [
    ["invalid UTF-8", new Uint8Array([0, 0, 0, 2, 0xc3, 0x28]), "invalid_utf8"],
    ["a JSON array", frameOf("[1,2,3]"), "not_an_object"],
    ["non-JSON text", frameOf("lock report"), "invalid_json"],
  ] as const
) {
  Deno.test(`a legacy connection is answered and kept after ${label}`, async () => {
    await using server = startServer();
    await using php = await RawClient.connect(server.addr.port);
    await php.write(bytes);
    assert.equal(errorCode(await nextOf(php)), code);
    const pong = await ask(php, { command: "ping", id: 3 });
    assert.deepEqual(pong, { id: 3, result: { status: "ok" } });
  });
}

Deno.test("after hello a bad frame still closes the connection", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  assert.equal((await ask(client, { command: "hello", id: 0 }))?.id, 0);
  await client.write(FAILED_ENCODE);
  assert.equal(errorCode(await nextOf(client)), "invalid_json");
  assert.equal(await nextOf(client), null);
});

Deno.test("a broken length prefix closes even a legacy connection", async () => {
  await using server = startServer({ maxFrameBytes: 1024 });
  await using php = await RawClient.connect(server.addr.port);
  await php.write(new Uint8Array([0, 0, 0x10, 0]));
  assert.equal(errorCode(await nextOf(php)), "frame_too_large");
  assert.equal(await nextOf(php), null);
});
