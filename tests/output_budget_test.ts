// Output budgets. Per connection: past maxOutputBytes, a peer that holds or
// waits for nothing is dropped, and one that does is no longer read from
// until it reads (a read-only call never ends a holder). Server-wide: while
// more than maxTotalOutputBytes is queued, each connection may queue only
// 64 KiB more, so non-reading peers that hold nothing are dropped; readers
// and holders carry on (a slow reader costs only itself).
import assert from "node:assert/strict";
import { connect, type LockClient } from "../mod.ts";
import { writeAll } from "../message/io.ts";
import { encodeFrame, FrameDecoder, type Message } from "../protocol/frame.ts";
import { deadline, startServer } from "./helpers.ts";
import { concat } from "./wire.ts";

const LOCKS = 1_000;

/** A bare socket that reads only when told to. */
class SlowPeer implements AsyncDisposable {
  readonly #conn: Deno.Conn;
  readonly #messages: Message[] = [];
  readonly #decoder = new FrameDecoder((payload) => {
    this.#messages.push(JSON.parse(new TextDecoder().decode(payload)));
  }, { maxFrameBytes: 64 * 1024 * 1024 });
  readonly #buffer = new Uint8Array(1 << 20);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  static async connect(port: number): Promise<SlowPeer> {
    return new SlowPeer(await Deno.connect({ port }));
  }

  async send(messages: object[]): Promise<void> {
    await writeAll(this.#conn, concat(messages.map(encodeFrame)));
  }

  /** Reads until `count` messages came, or the end: how many came. */
  async read(count: number): Promise<number> {
    while (this.#messages.length < count) {
      const n = await deadline(this.#conn.read(this.#buffer), 10_000, "data");
      if (n === null) break;
      this.#decoder.push(this.#buffer.subarray(0, n));
    }
    return this.#messages.length;
  }

  take(): Message[] {
    return this.#messages.splice(0);
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#conn.close();
    return Promise.resolve();
  }
}

/** Makes every `status` reply about 370 KB: many locks with long names. */
async function fillTable(client: LockClient): Promise<void> {
  const name = "x".repeat(240);
  await Promise.all(
    Array.from({ length: LOCKS }, (_, i) => client.lock(`${name}${i}`)),
  );
}

function statusRequests(count: number): object[] {
  return Array.from({ length: count }, (_, id) => ({ command: "status", id }));
}

Deno.test("a holder that asks for status and does not read is paused, never dropped, and gets every reply later", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using reader = await connect({ port });
  await fillTable(reader);
  await using holder = await SlowPeer.connect(port);
  await holder.send([{
    command: "lock",
    parameters: { lockName: "mine" },
    id: "lock",
  }]);
  assert.equal(await holder.read(1), 1);
  assert.equal(holder.take()[0]?.id, "lock");
  // About 11 MB of replies, far past the 4 MiB cap, while it does not read.
  await holder.send(statusRequests(30));
  await reader.ping();
  await reader.ping();
  const during = server.status();
  assert.deepEqual(
    during.locks.find((lock) => lock.name === "mine")?.holders.length,
    1,
    "the holder keeps its lock",
  );
  assert.equal(during.connections.current, 2);
  assert.equal(await holder.read(30), 30, "every reply, once it reads");
  assert.ok(holder.take().every((reply) => reply.result !== undefined));
});

Deno.test("past the server-wide budget, non-reading peers that hold nothing are dropped; readers and holders carry on", async () => {
  await using server = startServer({ maxTotalOutputBytes: 4 * 1024 * 1024 });
  const port = server.addr.port;
  await using reader = await connect({ port });
  await fillTable(reader);
  await using holder = await SlowPeer.connect(port);
  await holder.send([{
    command: "lock",
    parameters: { lockName: "mine" },
    id: "lock",
  }]);
  assert.equal(await holder.read(1), 1);
  holder.take();
  await holder.send(statusRequests(10));
  // Three peers, each asking for about 3.7 MB, under its own 4 MiB cap.
  const idle = await Promise.all([1, 2, 3].map(() => SlowPeer.connect(port)));
  try {
    for (const peer of idle) await peer.send(statusRequests(10));
    await reader.ping();
    const status = server.status();
    assert.equal(
      status.locks.find((lock) => lock.name === "mine")?.holders.length,
      1,
    );
    // A dropped peer reads what the kernel had, then the end of the stream.
    const got = await Promise.all(idle.map((peer) => peer.read(10)));
    const dropped = got.filter((count) => count < 10).length;
    assert.ok(dropped >= 1, `non-reading peers dropped (replies: ${got})`);
    assert.equal(await holder.read(10), 10);
    await reader.ping();
  } finally {
    for (const peer of idle) await peer[Symbol.asyncDispose]();
  }
});
