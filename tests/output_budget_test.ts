// Output budgets. Per connection: past maxOutputBytes, a peer that holds or
// waits for nothing is dropped, and one that does is no longer read from
// until it reads (a read-only call never ends a holder). Server-wide: while
// more than maxTotalOutputBytes is queued, each connection may queue only
// 64 KiB more, so non-reading peers that hold nothing are dropped; readers
// and holders carry on (a slow reader costs only itself).
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { writeAll } from "../message/io.ts";
import { encodeFrame, FrameDecoder, type Message } from "../protocol/frame.ts";
import { deadline, startServer } from "./helpers.ts";
import { MessageServer } from "../message/mod.ts";
import { concat } from "./wire.ts";

/** An id this long makes each `ping` reply about as long: replies echo it. */
const LONG_ID = 30_000;

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

/** `count` pings, each with an id of {@linkcode LONG_ID} characters. */
function bigPings(count: number): object[] {
  return Array.from({ length: count }, (_, i) => ({
    command: "ping",
    id: `${i}`.padEnd(LONG_ID, "."),
  }));
}

Deno.test("a holder that sends requests and does not read is paused, never dropped, and gets every reply later", async () => {
  // A 64 KiB cap, so that a few hundred KB of replies pass it.
  await using server = startServer({ maxOutputBytes: 64 * 1024 });
  const port = server.addr.port;
  await using reader = await connect({ port });
  await using holder = await SlowPeer.connect(port);
  await holder.send([{
    command: "lock",
    parameters: { lockName: "mine" },
    id: "lock",
  }]);
  assert.equal(await holder.read(1), 1);
  assert.equal(holder.take()[0]?.id, "lock");
  // About 900 KB of replies, far past the cap, while it does not read; the
  // server stops reading its requests, so the send ends only once it reads.
  const sent = holder.send(bigPings(30));
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
  await sent;
  assert.ok(holder.take().every((reply) => reply.result !== undefined));
});

Deno.test("a holder whose one read brings more replies than its cap is paused and resumed until every reply, in order", async () => {
  // Forty requests in one write, whose replies pass a 1 KiB cap several
  // times over before the first of them is written: the rest of each read
  // waits, and reading stops until the output is written, again and again.
  await using server = startServer({ maxOutputBytes: 1024 });
  await using holder = await SlowPeer.connect(server.addr.port);
  const pings = Array.from({ length: 40 }, (_, i) => ({
    command: "ping",
    id: `${i}`.padEnd(300, "."),
  }));
  await holder.send([
    { command: "lock", parameters: { lockName: "mine" }, id: "lock" },
    ...pings,
  ]);
  assert.equal(await holder.read(41), 41);
  assert.deepEqual(
    holder.take().map((reply) => reply.id),
    ["lock", ...pings.map((ping) => ping.id)],
  );
  assert.equal(server.status().connections.current, 1, "never dropped");
});

Deno.test("a waiter with position events that does not read is paused, never dropped, and keeps its place", async () => {
  await using server = startServer({ maxOutputBytes: 64 * 1024 });
  const port = server.addr.port;
  await using holder = await connect({ port });
  const held = await holder.lock("queue");
  const waiter = await SlowPeer.connect(port);
  await waiter.send([{
    command: "lock",
    parameters: { lockName: "queue", notify: true },
    id: "lock",
  }]);
  await using behind = await connect({ port });
  const next = behind.lock("queue");
  try {
    // Far past its cap while it does not read, waiting all the while.
    const sent = waiter.send(bigPings(30));
    await behind.ping();
    await held.release();
    await behind.ping();
    const during = server.status();
    const queue = during.locks.find((lock) => lock.name === "queue");
    assert.equal(queue?.holders.length, 1, "the waiter was granted in turn");
    assert.equal(queue?.waiters.length, 1, "the one behind it still waits");
    assert.equal(during.connections.current, 3);
    // Once it reads: its grant and every reply.
    await waiter.read(31);
    await sent;
    const replies = waiter.take();
    assert.deepEqual(
      replies.find((reply) => reply.id === "lock")?.result,
      { status: "ok", token: 2 },
    );
    assert.equal(
      replies.filter((reply) => reply.result !== undefined).length,
      31,
    );
  } finally {
    await waiter[Symbol.asyncDispose]();
  }
  await deadline(next, 10_000, "the grant behind the waiter");
});

Deno.test("past the server-wide budget, non-reading peers that hold nothing are dropped; readers carry on", async () => {
  // Replies of 370 KB computed at once, as a large report would be: they queue
  // in the server faster than any socket drains them.
  const blob = "x".repeat(370_000);
  const server = new MessageServer({
    port: 0,
    maxTotalOutputBytes: 4 * 1024 * 1024,
    handlers: { blob: () => ({ blob }) },
  });
  await using _server = server;
  const port = server.addr.port;
  await using reader = await SlowPeer.connect(port);
  // Three peers, each asking for about 3.7 MB, under its own 4 MiB cap.
  const idle = await Promise.all([1, 2, 3].map(() => SlowPeer.connect(port)));
  try {
    for (const peer of idle) await peer.send(blobs(10));
    // A reader, asking one at a time, is served throughout.
    for (let i = 0; i < 3; i++) {
      await reader.send(blobs(1));
      assert.equal(await reader.read(i + 1), i + 1);
    }
    // A dropped peer reads what the kernel had, then the end of the stream.
    const got = await Promise.all(idle.map((peer) => peer.read(10)));
    const dropped = got.filter((count) => count < 10).length;
    assert.ok(dropped >= 1, `non-reading peers dropped (replies: ${got})`);
  } finally {
    for (const peer of idle) await peer[Symbol.asyncDispose]();
  }
});

function blobs(count: number): object[] {
  return Array.from({ length: count }, (_, id) => ({ command: "blob", id }));
}
