// Bounded time for an unfinished frame: a peer that sends half a frame and
// stops is closed with frame_timeout, unless it holds or waits for a lock
// (closing it would take the lock from a live peer; it costs only its slot).
import assert from "node:assert/strict";
import { encodeFrame } from "../protocol/frame.ts";
import { RawClient, startServer } from "./helpers.ts";
import { ask, concat, nextOf } from "./wire.ts";

const FRAME_TIMEOUT = 200;

Deno.test("a peer that sends half a frame and stops gets frame_timeout and is closed; a holder that does keeps its lock", async () => {
  await using server = startServer({ frameTimeout: FRAME_TIMEOUT });
  const port = server.addr.port;
  const frame = encodeFrame({
    command: "lock",
    parameters: { lockName: "late" },
    id: 2,
  });
  await using holder = await RawClient.connect(port);
  const granted = await ask(holder, {
    command: "lock",
    parameters: { lockName: "kept" },
    id: 1,
  });
  assert.equal((granted?.result as { status: string }).status, "ok");
  await holder.write(frame.subarray(0, 10));
  // The idle peer's clock starts after the holder's: once it is closed, the
  // holder's has run out too.
  await using idle = await RawClient.connect(port);
  await idle.write(frame.subarray(0, 10));
  assert.deepEqual(await nextOf(idle), {
    error: {
      code: "frame_timeout",
      message: `Frame not finished within ${FRAME_TIMEOUT} ms`,
    },
  });
  assert.equal(await nextOf(idle), null);
  await holder.write(frame.subarray(10));
  const late = await nextOf(holder);
  assert.equal((late?.result as { status: string }).status, "ok");
  const status = server.status();
  assert.deepEqual(status.locks.map((lock) => lock.name).sort(), [
    "kept",
    "late",
  ]);
});

Deno.test("frames that keep arriving split across reads are not cut off", async () => {
  await using server = startServer({ frameTimeout: FRAME_TIMEOUT });
  await using peer = await RawClient.connect(server.addr.port);
  const frame = encodeFrame({ command: "ping", id: 1 });
  // Every write finishes a frame and starts the next: the connection is
  // always inside a frame, for longer than the timeout, yet never stalls.
  const next = concat([frame.subarray(3), frame.subarray(0, 3)]);
  await peer.write(frame.subarray(0, 3));
  const started = performance.now();
  let answered = 0;
  while (performance.now() - started < 3 * FRAME_TIMEOUT) {
    await peer.write(next);
    assert.deepEqual(await nextOf(peer), { id: 1, result: { status: "ok" } });
    answered++;
  }
  await peer.write(frame.subarray(3));
  assert.deepEqual(await nextOf(peer), { id: 1, result: { status: "ok" } });
  assert.ok(answered > 1);
});
