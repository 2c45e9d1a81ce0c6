/**
 * Integration tests of the message layer over real TCP: an in-process
 * MessageServer on port 0, MessageClients, raw sockets where a test must
 * control the bytes, and a child process for a peer that crashes.
 */

import assert from "node:assert/strict";
import {
  type CloseInfo,
  type Connection,
  ConnectionError,
  FrameError,
  type Handler,
  type Message,
  MessageClient,
  MessageError,
  MessageServer,
  type MessageServerOptions,
  RemoteError,
  RequestTimeoutError,
} from "../message/mod.ts";
import { decodeMessage, encodeFrame, FrameDecoder } from "../protocol/frame.ts";

const CRASH_CLIENT = `${import.meta.dirname}/fixtures/crash_client.ts`;

/** Values pushed by hooks and handlers, awaited one at a time by the test. */
class Queue<T> {
  /** Everything pushed so far, taken or not. */
  readonly all: T[] = [];
  readonly #items: T[] = [];
  readonly #waiters: ((item: T) => void)[] = [];

  push(item: T): void {
    this.all.push(item);
    const waiter = this.#waiters.shift();
    if (waiter === undefined) this.#items.push(item);
    else waiter(item);
  }

  next(): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift()!);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

interface Closed {
  connection: Connection;
  info: CloseInfo;
}

interface Failure {
  error: unknown;
  message: Message;
}

type ServeOptions = Omit<
  MessageServerOptions,
  "handlers" | "onOpen" | "onClose" | "onReject" | "onError"
>;

/** A MessageServer on a free port whose hooks feed queues. */
class TestServer implements AsyncDisposable {
  readonly opens = new Queue<Connection>();
  readonly closes = new Queue<Closed>();
  readonly rejects = new Queue<Deno.NetAddr>();
  readonly errors = new Queue<Failure>();
  readonly server: MessageServer;

  constructor(
    handlers: Record<string, Handler>,
    options: ServeOptions = {},
  ) {
    this.server = new MessageServer({
      ...options,
      port: 0,
      handlers,
      onOpen: (connection) => this.opens.push(connection),
      onClose: (connection, info) => this.closes.push({ connection, info }),
      onReject: (addr) => this.rejects.push(addr),
      onError: (error, message) => this.errors.push({ error, message }),
    });
  }

  get port(): number {
    return this.server.addr.port;
  }

  /** How many times the close hook ran for a connection. */
  closeCount(connection: Connection): number {
    return this.closes.all.filter((closed) => closed.connection === connection)
      .length;
  }

  connect(): Promise<MessageClient> {
    return MessageClient.connect({ port: this.port });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.server.close();
  }
}

/** A raw TCP peer that writes bytes of its choosing and decodes what comes back. */
class RawPeer implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  /** Decoded messages; `null` marks the end of the stream (EOF or reset). */
  readonly #messages = new Queue<Message | null>();
  readonly #reading: Promise<void>;

  static async connect(
    port: number,
    options: { read?: boolean } = {},
  ): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new RawPeer(conn, options.read ?? true);
  }

  private constructor(conn: Deno.TcpConn, read: boolean) {
    this.#conn = conn;
    this.#reading = read ? this.#read() : Promise.resolve();
  }

  async write(bytes: Uint8Array): Promise<void> {
    let written = 0;
    while (written < bytes.length) {
      written += await this.#conn.write(bytes.subarray(written));
    }
  }

  send(message: object): Promise<void> {
    return this.write(encodeFrame(message));
  }

  async next(): Promise<Message> {
    const message = await this.#messages.next();
    if (message === null) throw new Error("The server closed the connection");
    return message;
  }

  /** Resolves when the server has closed the connection, with no message before. */
  async ended(): Promise<void> {
    const message = await this.#messages.next();
    if (message !== null) {
      throw new Error(`Expected the end, got ${JSON.stringify(message)}`);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
    await this.#reading;
  }

  async #read(): Promise<void> {
    const decoder = new FrameDecoder(
      (payload) => this.#messages.push(decodeMessage(payload)),
    );
    const buffer = new Uint8Array(4096);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        decoder.push(buffer.subarray(0, n));
      }
    } catch {
      // Reset by the server, or closed by the test.
    }
    this.#messages.push(null);
  }
}

/** Collects a client's "message" events. */
function eventsOf(client: MessageClient): Queue<Message> {
  const events = new Queue<Message>();
  client.addEventListener("message", (event) => {
    events.push((event as MessageEvent<Message>).data);
  });
  return events;
}

function frameOf(bytes: Uint8Array): Uint8Array {
  const frame = new Uint8Array(4 + bytes.length);
  new DataView(frame.buffer).setUint32(0, bytes.length);
  frame.set(bytes, 4);
  return frame;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(
    parts.reduce((sum, part) => sum + part.length, 0),
  );
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

const echo: Handler = (message) => message.parameters ?? null;

/** A handler that never answers and hands each request to the test. */
function parking(): {
  handler: Handler;
  parked: Queue<{ id: unknown; connection: Connection }>;
} {
  const parked = new Queue<{ id: unknown; connection: Connection }>();
  return {
    handler: (message, connection) => {
      parked.push({ id: message.id, connection });
    },
    parked,
  };
}

// Framing

Deno.test("a frame written one byte at a time is decoded once complete", async () => {
  await using server = new TestServer({ echo });
  await using peer = await RawPeer.connect(server.port);
  const frame = encodeFrame({
    command: "echo",
    id: 1,
    parameters: { text: "héllo ✓ 🔒" },
  });
  for (const byte of frame) await peer.write(Uint8Array.of(byte));
  assert.deepEqual(await peer.next(), {
    id: 1,
    result: { text: "héllo ✓ 🔒" },
  });
});

Deno.test("several frames coalesced into one write are each answered, in order", async () => {
  await using server = new TestServer({ echo });
  await using peer = await RawPeer.connect(server.port);
  const frames = [1, 2, 3].map((id) =>
    encodeFrame({ command: "echo", id, parameters: { n: id } })
  );
  await peer.write(concat(...frames));
  for (const id of [1, 2, 3]) {
    assert.deepEqual(await peer.next(), { id, result: { n: id } });
  }
});

Deno.test("a write that ends inside the next frame's length prefix is decoded", async () => {
  await using server = new TestServer({ echo });
  await using peer = await RawPeer.connect(server.port);
  const bytes = concat(
    encodeFrame({ command: "echo", id: 1, parameters: { n: 1 } }),
    encodeFrame({ command: "echo", id: 2, parameters: { n: 2 } }),
  );
  const cut = encodeFrame({ command: "echo", id: 1, parameters: { n: 1 } })
    .length + 2;
  await peer.write(bytes.subarray(0, cut));
  assert.deepEqual(await peer.next(), { id: 1, result: { n: 1 } });
  await peer.write(bytes.subarray(cut));
  assert.deepEqual(await peer.next(), { id: 2, result: { n: 2 } });
});

// RPC and events

Deno.test("the server echoes any id it is given", async () => {
  await using server = new TestServer({ echo });
  await using peer = await RawPeer.connect(server.port);
  for (const id of [0, -7, 2.5, 9_007_199_254_740_991, "abc", { a: 1 }]) {
    await peer.send({ command: "echo", id, parameters: { ok: true } });
    assert.deepEqual(await peer.next(), { id, result: { ok: true } });
  }
});

Deno.test("rpc() matches replies by id when they arrive out of order", async () => {
  const { handler, parked } = parking();
  await using server = new TestServer({ park: handler });
  await using client = await server.connect();
  const settled: string[] = [];
  const first = client.rpc("park").then((
    result,
  ) => (settled.push("first"), result));
  const second = client.rpc("park").then((
    result,
  ) => (settled.push("second"), result));
  const a = await parked.next();
  const b = await parked.next();
  b.connection.send({ id: b.id, result: "to the second" });
  assert.equal(await second, "to the second");
  a.connection.send({ id: a.id, error: { code: "late", message: "Late" } });
  await assert.rejects(first, {
    name: "RemoteError",
    code: "late",
    message: "Late",
  });
  assert.deepEqual(settled, ["second"]);
});

Deno.test("unsolicited messages between replies reach the message event in order and settle nothing", async () => {
  await using server = new TestServer({
    work: (message, connection) => {
      connection.send({ event: "progress", step: 1 });
      // Carries the request's id but neither result nor error: an event.
      connection.send({ id: message.id, event: "progress", step: 2 });
      queueMicrotask(() => connection.send({ event: "after" }));
      return { done: true };
    },
  });
  await using client = await server.connect();
  const events = eventsOf(client);
  assert.deepEqual(await client.rpc("work"), { done: true });
  // Events before the reply were dispatched before the rpc settled.
  assert.ok(events.all.length >= 2);
  assert.deepEqual(await events.next(), { event: "progress", step: 1 });
  assert.deepEqual(await events.next(), { id: 1, event: "progress", step: 2 });
  assert.deepEqual(await events.next(), { event: "after" });
});

Deno.test("send() delivers a message with no reply, and the server can push back at any time", async () => {
  const pushed = new Queue<Message>();
  await using server = new TestServer({
    note: (message, connection) => {
      pushed.push(message);
      connection.send({ event: "noted", text: message.text });
    },
  });
  await using client = await server.connect();
  const events = eventsOf(client);
  client.send({ command: "note", text: "hi" });
  assert.deepEqual(await pushed.next(), { command: "note", text: "hi" });
  assert.deepEqual(await events.next(), { event: "noted", text: "hi" });
});

// Handler errors

Deno.test("a MessageError becomes an error reply with its code and the connection stays open", async () => {
  await using server = new TestServer({
    refuse: () => {
      throw new MessageError("not_allowed", 'Refused "x"');
    },
    refuseLater: () => Promise.reject(new MessageError("busy", "Later")),
    echo,
  });
  await using client = await server.connect();
  await assert.rejects(client.rpc("refuse"), (error) => {
    assert.ok(error instanceof RemoteError);
    assert.equal(error.code, "not_allowed");
    assert.equal(error.message, 'Refused "x"');
    return true;
  });
  await assert.rejects(client.rpc("refuseLater"), { code: "busy" });
  assert.deepEqual(await client.rpc("echo", { n: 1 }), { n: 1 });
  assert.equal(server.errors.all.length, 0);
  assert.equal(server.closes.all.length, 0);
});

Deno.test("a thrown Error becomes an internal_error reply, calls onError and keeps the connection", async () => {
  const boom = new Error("boom");
  await using server = new TestServer({
    crash: () => {
      throw boom;
    },
    crashLater: async () => {
      await Promise.resolve();
      throw boom;
    },
    echo,
  });
  await using client = await server.connect();
  for (const command of ["crash", "crashLater"]) {
    await assert.rejects(client.rpc(command), {
      name: "RemoteError",
      code: "internal_error",
      message: "Internal server error",
    });
    const failure = await server.errors.next();
    assert.equal(failure.error, boom);
    assert.equal(failure.message.command, command);
  }
  assert.deepEqual(await client.rpc("echo", { n: 2 }), { n: 2 });
  assert.equal(client.signal.aborted, false);
});

Deno.test("a result that cannot be encoded becomes an internal_error reply", async () => {
  await using server = new TestServer({
    big: () => 1n,
    bigLater: () => Promise.resolve(1n),
    echo,
  });
  await using client = await server.connect();
  for (const command of ["big", "bigLater"]) {
    await assert.rejects(client.rpc(command), { code: "internal_error" });
    const failure = await server.errors.next();
    assert.ok(failure.error instanceof TypeError);
  }
  assert.deepEqual(await client.rpc("echo", { n: 3 }), { n: 3 });
});

Deno.test("an unknown command gets an unknown_command error reply", async () => {
  await using server = new TestServer({ echo });
  await using client = await server.connect();
  await assert.rejects(client.rpc("nope"), {
    name: "RemoteError",
    code: "unknown_command",
    message: 'Unknown command "nope"',
  });
  assert.deepEqual(await client.rpc("echo", { n: 1 }), { n: 1 });
});

Deno.test("an error for a message without an id echoes its command instead", async () => {
  await using server = new TestServer({ echo });
  await using peer = await RawPeer.connect(server.port);
  await peer.send({ command: "nope" });
  assert.deepEqual(await peer.next(), {
    command: "nope",
    error: { code: "unknown_command", message: 'Unknown command "nope"' },
  });
});

Deno.test("a message without a string command gets an invalid_parameters error reply", async () => {
  await using server = new TestServer({ echo });
  await using peer = await RawPeer.connect(server.port);
  const error = {
    code: "invalid_parameters",
    message: 'Message has no string "command" key',
  };
  await peer.send({ id: 7, command: 42 });
  assert.deepEqual(await peer.next(), { id: 7, error });
  await peer.send({});
  assert.deepEqual(await peer.next(), { error });
  await peer.send({ command: "echo", id: 8 });
  assert.deepEqual(await peer.next(), { id: 8, result: null });
});

// Closing

Deno.test("the close hook runs once when a client process is killed", async () => {
  const ready = Promise.withResolvers<Connection>();
  await using server = new TestServer({
    ready: (_message, connection) => ready.resolve(connection),
  });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      CRASH_CLIENT,
      String(server.port),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  let connection: Connection;
  try {
    connection = await Promise.race([
      ready.promise,
      child.status.then((status) => {
        throw new Error(`The client exited early with ${status.code}`);
      }),
    ]);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited already.
    }
  }
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL");
  const closed = await server.closes.next();
  assert.equal(closed.connection, connection);
  assert.ok(["peer_closed", "io_error"].includes(closed.info.reason));
  await server.server.close();
  assert.equal(server.closeCount(connection), 1);
});

Deno.test("the close hook runs once with reason closed when a handler closes the connection", async () => {
  await using server = new TestServer({
    bye: (_message, connection) => connection.close(),
  });
  await using client = await server.connect();
  const connection = await server.opens.next();
  await assert.rejects(client.rpc("bye"), ConnectionError);
  const closed = await server.closes.next();
  assert.equal(closed.connection, connection);
  assert.equal(closed.info.reason, "closed");
  assert.equal((await client.closed).reason, "peer_closed");
  await client.close();
  await server.server.close();
  assert.equal(server.closeCount(connection), 1);
});

Deno.test("server.close() closes every connection, runs each close hook once and fails pending rpcs", async () => {
  const { handler, parked } = parking();
  await using server = new TestServer({ park: handler });
  await using a = await server.connect();
  await using b = await server.connect();
  const pendingA = a.rpc("park");
  const pendingB = b.rpc("park", {}, { timeout: 60_000 });
  await parked.next();
  await parked.next();
  await server.server.close();
  assert.deepEqual(server.closes.all.map((closed) => closed.info.reason), [
    "shutdown",
    "shutdown",
  ]);
  await assert.rejects(pendingA, ConnectionError);
  await assert.rejects(pendingB, ConnectionError);
  for (const client of [a, b]) {
    assert.equal((await client.closed).reason, "peer_closed");
    assert.ok(client.signal.aborted);
    assert.ok(client.signal.reason instanceof ConnectionError);
    await assert.rejects(client.rpc("park"), ConnectionError);
    assert.throws(() => client.send({ command: "park" }), ConnectionError);
  }
  await server.server.close();
  for (const closed of server.closes.all) {
    assert.equal(server.closeCount(closed.connection), 1);
  }
});

Deno.test("the close hook runs once with reason peer_closed when the client closes", async () => {
  await using server = new TestServer({ echo });
  const client = await server.connect();
  const connection = await server.opens.next();
  await client.close();
  assert.equal((await client.closed).reason, "closed");
  assert.ok(client.signal.aborted);
  const closed = await server.closes.next();
  assert.equal(closed.connection, connection);
  assert.equal(closed.info.reason, "peer_closed");
  await client.close();
  await server.server.close();
  assert.equal(server.closeCount(connection), 1);
});

Deno.test("a frame that is not a JSON object gets an error reply, then the connection closes", async () => {
  await using server = new TestServer({ echo });
  const cases: [Uint8Array, string][] = [
    [new TextEncoder().encode("not json"), "invalid_json"],
    [Uint8Array.of(0x22, 0xff, 0x22), "invalid_utf8"],
    [new TextEncoder().encode("[1,2]"), "not_an_object"],
  ];
  for (const [payload, code] of cases) {
    await using peer = await RawPeer.connect(server.port);
    const connection = await server.opens.next();
    // The valid frame after the bad one must never reach a handler.
    await peer.write(
      concat(frameOf(payload), encodeFrame({ command: "echo", id: 1 })),
    );
    const reply = await peer.next();
    assert.equal((reply.error as { code: string }).code, code);
    assert.equal(reply.id, undefined);
    await peer.ended();
    const closed = await server.closes.next();
    assert.equal(closed.connection, connection);
    assert.equal(closed.info.reason, "protocol_error");
    assert.ok(closed.info.error instanceof FrameError);
    assert.equal(closed.info.error.code, code);
  }
  await server.server.close();
  assert.equal(server.closes.all.length, cases.length);
});

Deno.test("an oversize length prefix gets a frame_too_large reply, then the connection closes", async () => {
  await using server = new TestServer({ echo }, { maxFrameBytes: 1024 });
  await using peer = await RawPeer.connect(server.port);
  const connection = await server.opens.next();
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, 1025);
  await peer.write(header);
  assert.deepEqual(await peer.next(), {
    error: {
      code: "frame_too_large",
      message: "Frame of 1025 bytes exceeds the limit of 1024 bytes",
    },
  });
  await peer.ended();
  const closed = await server.closes.next();
  assert.equal(closed.connection, connection);
  assert.equal(closed.info.reason, "protocol_error");
  await server.server.close();
  assert.equal(server.closeCount(connection), 1);
});

// Client-side waiting

Deno.test("rpc() rejects with RequestTimeoutError after its timeout and ignores the late reply", async () => {
  const { handler, parked } = parking();
  await using server = new TestServer({ park: handler, echo });
  await using client = await server.connect();
  const events = eventsOf(client);
  await assert.rejects(
    client.rpc("park", {}, { timeout: 20 }),
    (error) => {
      assert.ok(error instanceof RequestTimeoutError);
      assert.equal(error.message, 'Request "park" got no reply within 20 ms');
      return true;
    },
  );
  const { id, connection } = await parked.next();
  connection.send({ id, result: "too late" });
  // The echo reply follows the late reply on the wire.
  assert.deepEqual(await client.rpc("echo", { n: 1 }), { n: 1 });
  assert.deepEqual(events.all, []);
});

Deno.test("rpc() with an aborted signal rejects with its reason and sends nothing", async () => {
  const { handler, parked } = parking();
  await using server = new TestServer({ park: handler, echo });
  await using client = await server.connect();
  const reason = new Error("Not any more");
  await assert.rejects(
    client.rpc("park", {}, { signal: AbortSignal.abort(reason) }),
    (error) => error === reason,
  );
  assert.deepEqual(await client.rpc("echo", {}), {});
  assert.equal(parked.all.length, 0);
});

Deno.test("rpc() stops waiting when its signal aborts and ignores the late reply", async () => {
  const { handler, parked } = parking();
  await using server = new TestServer({ park: handler, echo });
  await using client = await server.connect();
  const events = eventsOf(client);
  const controller = new AbortController();
  const reply = client.rpc("park", {}, { signal: controller.signal });
  const { id, connection } = await parked.next();
  const reason = new Error("Changed my mind");
  controller.abort(reason);
  await assert.rejects(reply, (error) => error === reason);
  connection.send({ id, result: "too late" });
  assert.deepEqual(await client.rpc("echo", { n: 2 }), { n: 2 });
  assert.deepEqual(events.all, []);
});

// Admission and limits

Deno.test("a peer outside the allow-list is disconnected at once and never reaches a handler", async () => {
  let reached = false;
  await using server = new TestServer({
    echo: () => (reached = true),
  }, { allowed: ["10.0.0.1"] });
  await using client = await server.connect();
  const rejected = await server.rejects.next();
  assert.equal(rejected.hostname, "127.0.0.1");
  const info = await client.closed;
  assert.ok(["peer_closed", "io_error"].includes(info.reason));
  await assert.rejects(client.rpc("echo"), ConnectionError);
  await server.server.close();
  assert.equal(reached, false);
  assert.equal(server.opens.all.length, 0);
  assert.equal(server.closes.all.length, 0);
});

Deno.test("a peer that never reads is dropped with output_overflow while another keeps up", async () => {
  const watching = new Queue<Connection>();
  const watchers = new Set<Connection>();
  const payload = "x".repeat(32 * 1024);
  let sequence = 0;
  await using server = new TestServer({
    watch: (_message, connection) => {
      watchers.add(connection);
      watching.push(connection);
      return true;
    },
    tick: () => {
      sequence++;
      for (const watcher of watchers) {
        watcher.send({ event: "tick", sequence, payload });
      }
      return sequence;
    },
  }, { maxOutputBytes: 256 * 1024 });
  await using stalled = await RawPeer.connect(server.port, { read: false });
  await stalled.send({ command: "watch", id: 1 });
  const stalledConnection = await watching.next();
  await using client = await server.connect();
  const events = eventsOf(client);
  await client.rpc("watch");
  const dropped = server.closes.next();
  let gone = false;
  dropped.then(() => (gone = true));
  for (let i = 0; !gone; i++) {
    assert.ok(i < 10_000, "The stalled peer was never dropped");
    await client.rpc("tick");
  }
  const closed = await dropped;
  assert.equal(closed.connection, stalledConnection);
  assert.equal(closed.info.reason, "output_overflow");
  // The reader got every tick, in order, and is still served.
  assert.equal(await client.rpc("tick"), sequence);
  assert.equal(events.all.length, sequence);
  events.all.forEach((event, i) => assert.equal(event.sequence, i + 1));
  assert.equal(client.signal.aborted, false);
});
