// Bad input harms no one else: the offender gets an error reply and is cut
// off; every other client and its locks are untouched. (A connection that
// never sent hello speaks the legacy protocol, whose bad payloads are skipped
// instead: legacy_protocol_test.ts.)
import assert from "node:assert/strict";
import { connect, type Lock, type LockClient } from "../mod.ts";
import { encodeFrame } from "../protocol/frame.ts";
import { assertConsistent, assertSoleHolder } from "./assertions.ts";
import { deadline, RawClient, startServer } from "./helpers.ts";
import { ask } from "./wire.ts";

async function assertStillHeld(
  holder: LockClient,
  other: LockClient,
  name: string,
): Promise<void> {
  assert.equal(await other.tryLock(name), null, `"${name}" is still held`);
  await holder.ping();
}

/** A raw connection that has said hello, so it is not a legacy one. */
async function offenderAt(port: number): Promise<RawClient> {
  const offender = await RawClient.connect(port);
  const reply = await offender.request({ command: "hello", id: 0 });
  assert.equal(reply?.id, 0);
  return offender;
}

Deno.test("an oversize frame closes only the offending connection", async () => {
  await using server = startServer({ maxFrameBytes: 1024 });
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using other = await connect({ port });
  const lock = await holder.lock("precious");
  await using offender = await RawClient.connect(port);
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, 1025);
  await offender.write(header);
  const reply = await offender.next();
  assert.equal((reply?.error as { code: string }).code, "frame_too_large");
  await offender.ended();
  await assertStillHeld(holder, other, "precious");
  await lock.release();
});

Deno.test("a 4 GiB length prefix is refused without allocating it", async () => {
  await using server = startServer();
  await using offender = await RawClient.connect(server.addr.port);
  await offender.write(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
  assert.equal(
    ((await offender.next())?.error as { code: string }).code,
    "frame_too_large",
  );
  await offender.ended();
});

for (
  const [label, bytes, code] of [
    ["non-JSON", "not json at all", "invalid_json"],
    ["a JSON array", "[1,2,3]", "not_an_object"],
    ["a JSON string", '"lock"', "not_an_object"],
    ["an empty frame", "", "invalid_json"],
  ] as const
) {
  Deno.test(`${label} closes only the offending connection`, async () => {
    await using server = startServer();
    const port = server.addr.port;
    await using holder = await connect({ port });
    await using other = await connect({ port });
    const lock = await holder.lock("precious");
    await using offender = await offenderAt(port);
    const payload = new TextEncoder().encode(bytes);
    const frame = new Uint8Array(4 + payload.length);
    new DataView(frame.buffer).setUint32(0, payload.length);
    frame.set(payload, 4);
    await offender.write(frame);
    const reply = await offender.next();
    assert.equal((reply?.error as { code: string }).code, code);
    await offender.ended();
    await assertStillHeld(holder, other, "precious");
    await lock.release();
  });
}

Deno.test("invalid UTF-8 closes only the offending connection", async () => {
  await using server = startServer();
  await using offender = await offenderAt(server.addr.port);
  await offender.write(new Uint8Array([0, 0, 0, 2, 0xc3, 0x28]));
  assert.equal(
    ((await offender.next())?.error as { code: string }).code,
    "invalid_utf8",
  );
  await offender.ended();
});

Deno.test("a connection that dies holding locks after bad input releases them", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using offender = await offenderAt(port);
  await offender.request({
    command: "lock",
    parameters: { lockName: "mine" },
    id: 1,
  });
  await offender.write(new Uint8Array([0, 0, 0, 1, 0x7b]));
  await offender.ended();
  await using other = await connect({ port });
  const lock = await other.lock("mine");
  await lock.release();
});

Deno.test("an unknown command gets an error reply and the connection stays open", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  assert.deepEqual(await client.request({ command: "fly", id: 9 }), {
    id: 9,
    error: { code: "unknown_command", message: 'Unknown command "fly"' },
  });
  assert.deepEqual(await client.request({ command: "ping", id: 10 }), {
    id: 10,
    result: { status: "ok" },
  });
});

Deno.test("wrong parameter types get invalid_parameters and the connection stays open", async () => {
  await using server = startServer();
  await using client = await RawClient.connect(server.addr.port);
  const bad = [
    { lockName: "x", mode: "sometimes" },
    { lockName: "x", wait: -1 },
    { lockName: "x", wait: 1.5 },
    { lockName: "x", wait: "10" },
    { lockName: ["x"] },
  ];
  for (const parameters of bad) {
    const reply = await client.request({ command: "lock", parameters, id: 1 });
    assert.equal(
      (reply?.error as { code: string }).code,
      "invalid_parameters",
      JSON.stringify(parameters),
    );
  }
  const reply = await client.request({
    command: "release",
    parameters: { lockName: 5 },
    id: 2,
  });
  assert.equal((reply?.error as { code: string }).code, "invalid_parameters");
  assert.equal((await client.request({ command: "ping", id: 3 }))?.id, 3);
});

Deno.test("a peer outside the allow-list is disconnected at once", async () => {
  await using server = startServer({ allowed: ["10.0.0.1", "192.168.0.0/16"] });
  await using raw = await RawClient.connect(server.addr.port);
  await raw.send({ command: "lock", parameters: { lockName: "x" }, id: 1 });
  assert.equal(await raw.next(), null);
  await raw.ended();
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
