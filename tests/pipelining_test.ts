// Pipelined requests: a client may send thousands of requests in one write;
// the server answers them all, in order, and serves everybody else meanwhile.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { encodeFrame } from "../protocol/frame.ts";
import { assertSoleHolder } from "./assertions.ts";
import { deadline, RawClient, startServer } from "./helpers.ts";
import { ask, concat } from "./wire.ts";

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
