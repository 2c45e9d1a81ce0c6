// Client labels: what a client calls itself in hello shows in the status
// report next to its holds and waits.
import assert from "node:assert/strict";
import { connect, type StatusLock } from "../mod.ts";
import { remote } from "./assertions.ts";
import { WAIT_MS } from "./events.ts";
import { deadline, RawClient, startServer } from "./helpers.ts";
import { errorCode } from "./wire.ts";

Deno.test("status shows the label each client gave for its holds and waits", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using a = await connect({ port, label: "host-a pid 7" });
  await using b = await connect({ port, label: "b".repeat(256) });
  await using c = await connect({ port });
  const lock = await a.lock("labelled");
  const pending = [b.lock("labelled"), c.lock("labelled")];
  await b.ping();
  await c.ping();
  const status = await c.status();
  const entry = status.locks.find((item) => item.name === "labelled");
  assert.ok(entry);
  const { holders, waiters } = entry as StatusLock;
  assert.equal(holders[0]!.label, "host-a pid 7");
  assert.equal(waiters[0]!.label, "b".repeat(256));
  assert.equal("label" in waiters[1]!, false);
  await lock.release();
  for (const granted of pending) {
    await (await deadline(granted, WAIT_MS, "a waiter's grant")).release();
  }
});

Deno.test("hello refuses a label that is not a string of at most 256 characters", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await assert.rejects(
    connect({ port, label: "x".repeat(257) }),
    remote("invalid_parameters"),
  );
  await using raw = await RawClient.connect(port);
  const reply = await raw.request({
    command: "hello",
    parameters: { client: 7 },
    id: 1,
  });
  assert.equal(reply?.id, 1);
  assert.equal(errorCode(reply), "invalid_parameters");
  assert.match(
    (reply?.error as { message: string }).message,
    /"client" must be a string of at most 256 characters/,
  );
});
