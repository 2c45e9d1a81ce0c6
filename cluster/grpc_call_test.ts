import assert from "node:assert/strict";
import * as http2 from "node:http2";
import {
  create,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2Channel } from "./http2_channel.ts";
import { streamCall, unaryCall } from "./grpc_call.ts";
import {
  KV,
  RangeResponseSchema,
  Watch,
  type WatchRequest,
  WatchRequestSchema,
  WatchResponseSchema,
} from "./proto/rpc_pb.ts";

/** What the fake member does with one request. */
type Answer = (
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  body: Uint8Array,
) => void;

/** A message in gRPC's framing. */
function framed(message: Uint8Array, flag = 0): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/** What `run` threw, which must be a ConnectError. */
async function failure(
  run: () => Promise<unknown>,
  what = "the call",
): Promise<ConnectError> {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof ConnectError, `${what}: ${error}`);
    return error;
  }
  assert.fail(`${what} succeeded`);
}

const RANGE_ANSWER = toBinary(
  RangeResponseSchema,
  create(RangeResponseSchema, { more: true }),
);

/** Answers once the whole request has come. */
function atEnd(answer: Answer): OnStream {
  return (stream, headers) => {
    const chunks: Uint8Array[] = [];
    stream.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    stream.on("end", () => answer(stream, headers, Buffer.concat(chunks)));
  };
}

/** What the fake member does with each stream, as it opens. */
type OnStream = (
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
) => void;

/**
 * An HTTP/2 server on a free loopback port; `answer` gets each request
 * whole, `onStream` each stream as it opens.
 */
async function fakeMember(answer: Answer | { onStream: OnStream }) {
  const onStream = typeof answer === "function"
    ? atEnd(answer)
    : answer.onStream;
  const server = http2.createServer();
  const seen: http2.IncomingHttpHeaders[] = [];
  const streamsClosed: Promise<void>[] = [];
  server.on("stream", (stream, headers) => {
    seen.push(headers);
    const close = Promise.withResolvers<void>();
    streamsClosed.push(close.promise);
    stream.on("close", () => close.resolve());
    stream.on("error", () => {});
    onStream(stream, headers);
  });
  const { promise, resolve } = Promise.withResolvers<void>();
  server.listen(0, "127.0.0.1", resolve);
  await promise;
  const { port } = server.address() as { port: number };
  const channel = new Http2Channel(`http://127.0.0.1:${port}`, {});
  return {
    channel,
    seen,
    /** Once each stream has closed (so has the client's), the session ends. */
    async [Symbol.asyncDispose]() {
      await Promise.all(streamsClosed);
      channel[Symbol.dispose]();
      const closed = Promise.withResolvers<void>();
      server.close(() => closed.resolve());
      await closed.promise;
    },
  };
}

function call(
  channel: Http2Channel,
  signal = new AbortController().signal,
  maxBytes = 1024,
) {
  const key = new TextEncoder().encode("k");
  const target = { channel, metadata: { token: "t0k" }, maxBytes };
  return unaryCall(target, KV.method.range, { key }, signal);
}

const ok: Answer = (stream) => {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, {
    waitForTrailers: true,
  });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(framed(RANGE_ANSWER));
};

Deno.test("unaryCall sends the method's path, the metadata and one framed request, and decodes the answer", async () => {
  let request: Uint8Array | undefined;
  await using member = await fakeMember((stream, headers, body) => {
    request = body;
    ok(stream, headers, body);
  });
  const answer = await call(member.channel);
  assert.equal(answer.more, true);
  const headers = member.seen[0]!;
  assert.equal(headers[":path"], "/etcdserverpb.KV/Range");
  assert.equal(headers["content-type"], "application/grpc+proto");
  assert.equal(headers["te"], "trailers");
  assert.equal(headers["token"], "t0k");
  assert.equal(request![0], 0);
  assert.equal(
    new DataView(request!.buffer, request!.byteOffset).getUint32(1),
    request!.length - 5,
  );
});

Deno.test("unaryCall throws etcd's status from the trailers, its message percent-decoded", async () => {
  await using member = await fakeMember((stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, {
      waitForTrailers: true,
    });
    stream.on("wantTrailers", () =>
      stream.sendTrailers({
        "grpc-status": String(Code.Unauthenticated),
        "grpc-message": "etcdserver: invalid auth token %E2%9C%93",
      }));
    stream.end();
  });
  const error = await failure(() => call(member.channel));
  assert.equal(error.code, Code.Unauthenticated);
  assert.equal(error.rawMessage, "etcdserver: invalid auth token ✓");
});

Deno.test("unaryCall reads a status sent in the headers alone (trailers-only)", async () => {
  await using member = await fakeMember((stream) => {
    stream.respond({
      ":status": 200,
      "content-type": "application/grpc",
      "grpc-status": String(Code.NotFound),
      "grpc-message": "etcdserver: requested lease not found",
    }, { endStream: true });
  });
  const error = await failure(() => call(member.channel));
  assert.equal(error.code, Code.NotFound);
  assert.equal(error.rawMessage, "etcdserver: requested lease not found");
});

Deno.test("unaryCall reports as unavailable what is not a gRPC answer: no status, a compressed or cut message, another HTTP status, a reset stream, a status that is not one", async () => {
  const cases: [string, Answer][] = [
    ["no status", (stream) => {
      stream.respond({ ":status": 200 });
      stream.end(framed(RANGE_ANSWER));
    }],
    ["compressed", (stream) => {
      stream.respond({ ":status": 200 }, { waitForTrailers: true });
      stream.on(
        "wantTrailers",
        () => stream.sendTrailers({ "grpc-status": "0" }),
      );
      stream.end(framed(RANGE_ANSWER, 1));
    }],
    ["cut", (stream) => {
      stream.respond({ ":status": 200 }, { waitForTrailers: true });
      stream.on(
        "wantTrailers",
        () => stream.sendTrailers({ "grpc-status": "0" }),
      );
      stream.end(framed(RANGE_ANSWER).subarray(0, 6));
    }],
    ["HTTP 503", (stream) => {
      stream.respond({ ":status": 503 }, { endStream: true });
    }],
    ["reset", (stream) => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)],
    ...["abc", "17", "", "00"].map((status): [string, Answer] => [
      `grpc-status "${status}"`,
      (stream) => {
        stream.respond({ ":status": 200 }, { waitForTrailers: true });
        stream.on(
          "wantTrailers",
          () => stream.sendTrailers({ "grpc-status": status }),
        );
        stream.end(framed(RANGE_ANSWER));
      },
    ]),
  ];
  for (const [what, answer] of cases) {
    await using member = await fakeMember(answer);
    const error = await failure(() => call(member.channel), what);
    assert.equal(error.code, Code.Unavailable, `${what}: ${error.message}`);
  }
});

Deno.test("unaryCall refuses an answer over its bound, and a refused connection is unavailable", async () => {
  await using member = await fakeMember(ok);
  const error = await failure(() => call(member.channel, undefined, 1));
  assert.equal(error.code, Code.ResourceExhausted);

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  using channel = new Http2Channel(`http://127.0.0.1:${port}`, {});
  const refused = await failure(() => call(channel));
  assert.equal(refused.code, Code.Unavailable);
});

Deno.test("an aborted unaryCall fails with the signal's reason and cancels its stream; the session goes on", async () => {
  const received = Promise.withResolvers<void>();
  const cancelled = Promise.withResolvers<number>();
  let first = true;
  await using member = await fakeMember((stream, headers, body) => {
    if (!first) return ok(stream, headers, body);
    first = false;
    stream.on("close", () => cancelled.resolve(stream.rstCode));
    stream.respond({ ":status": 200 });
    received.resolve();
  });
  const abort = new AbortController();
  const calling = call(member.channel, abort.signal);
  await received.promise;
  abort.abort(new DOMException("gave up", "TimeoutError"));
  const error = await calling.then(() => assert.fail("resolved"), (e) => e);
  assert.ok(error instanceof DOMException);
  assert.equal(error.name, "TimeoutError");
  assert.equal(await cancelled.promise, http2.constants.NGHTTP2_CANCEL);
  assert.equal((await call(member.channel)).more, true);
});

/** A watch answer, told apart by `id` (as its compact revision), with a value of `bytes`. */
function watchAnswer(id: number, bytes = 0): Uint8Array {
  return framed(toBinary(
    WatchResponseSchema,
    create(WatchResponseSchema, {
      compactRevision: BigInt(id),
      events: bytes === 0 ? [] : [{ kv: { value: new Uint8Array(bytes) } }],
    }),
  ));
}

/** Two requests, then none until `signal` aborts (the stream stays open). */
function requestsUntil(
  signal: AbortSignal,
): AsyncIterable<MessageInitShape<typeof WatchRequestSchema>> {
  return (async function* () {
    for (const startRevision of [1n, 2n]) {
      yield {
        requestUnion: { case: "createRequest", value: { startRevision } },
      };
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    signal.addEventListener("abort", () => resolve(), { once: true });
    await promise;
  })();
}

/** The request frames of a stream, decoded as they come. */
function requestsOf(stream: http2.ServerHttp2Stream): WatchRequest[] {
  const requests: WatchRequest[] = [];
  let rest = new Uint8Array(0);
  stream.on("data", (chunk: Uint8Array) => {
    rest = Buffer.concat([rest, chunk]);
    while (rest.length >= 5) {
      const length = new DataView(rest.buffer, rest.byteOffset).getUint32(1);
      if (rest.length < 5 + length) break;
      requests.push(
        fromBinary(WatchRequestSchema, rest.subarray(5, 5 + length)),
      );
      rest = rest.subarray(5 + length);
    }
  });
  return requests;
}

Deno.test("streamCall writes requests as they come and reads answers however they are cut: a large one over many chunks, several in one", async () => {
  const done = new AbortController();
  await using member = await fakeMember({
    onStream(stream) {
      const requests = requestsOf(stream);
      stream.respond({ ":status": 200 }, { waitForTrailers: true });
      stream.on(
        "wantTrailers",
        () => stream.sendTrailers({ "grpc-status": "0" }),
      );
      stream.once("data", () => {
        stream.write(watchAnswer(1, 200_000));
        stream.write(
          Buffer.concat([watchAnswer(2), watchAnswer(3), watchAnswer(4)]),
        );
        // The answers end once both requests have come.
        const finish = () => {
          if (requests.length < 2) return stream.once("data", finish);
          stream.write(watchAnswer(requests.length + 3));
          stream.end();
        };
        finish();
      });
    },
  });
  const target = { channel: member.channel, metadata: {}, maxBytes: 1 << 20 };
  const answers = streamCall(
    target,
    Watch.method.watch,
    requestsUntil(done.signal),
    new AbortController().signal,
  );
  const ids: number[] = [];
  for await (const answer of answers) {
    ids.push(Number(answer.compactRevision));
    if (answer.events.length > 0) {
      assert.equal(answer.events[0]!.kv!.value.length, 200_000);
    }
  }
  done.abort();
  assert.deepEqual(ids, [1, 2, 3, 4, 5]);
  assert.equal(member.seen[0]![":path"], "/etcdserverpb.Watch/Watch");
});

Deno.test("streamCall throws the status that ends a stream after its answers, and a message cut by the end", async () => {
  for (
    const [end, code] of [["status", Code.Unauthenticated], [
      "cut",
      Code.Unavailable,
    ]] as const
  ) {
    await using member = await fakeMember({
      onStream(stream) {
        stream.respond({ ":status": 200 }, { waitForTrailers: true });
        stream.on("wantTrailers", () =>
          stream.sendTrailers({
            "grpc-status": end === "status" ? String(code) : "0",
            "grpc-message": "etcdserver: invalid auth token",
          }));
        stream.write(watchAnswer(1));
        stream.end(end === "cut" ? watchAnswer(2).subarray(0, 4) : undefined);
      },
    });
    const target = { channel: member.channel, metadata: {}, maxBytes: 1024 };
    const signal = new AbortController().signal;
    const ids: number[] = [];
    const error = await failure(async () => {
      const requests = requestsUntil(signal);
      for await (
        const answer of streamCall(target, Watch.method.watch, requests, signal)
      ) {
        ids.push(Number(answer.compactRevision));
      }
    }, end);
    assert.deepEqual(ids, [1], end);
    assert.equal(error.code, code, `${end}: ${error.message}`);
  }
});

Deno.test("a stream is cancelled when its reader leaves the loop, and when its signal aborts (reading then fails with the reason)", async () => {
  const resets: Promise<number>[] = [];
  await using member = await fakeMember({
    onStream(stream) {
      const reset = Promise.withResolvers<number>();
      resets.push(reset.promise);
      stream.on("close", () => reset.resolve(stream.rstCode));
      stream.respond({ ":status": 200 });
      stream.write(watchAnswer(1));
    },
  });
  const target = { channel: member.channel, metadata: {}, maxBytes: 1024 };
  const never = new AbortController().signal;
  for await (
    const answer of streamCall(
      target,
      Watch.method.watch,
      requestsUntil(never),
      never,
    )
  ) {
    assert.equal(Number(answer.compactRevision), 1);
    break;
  }
  assert.equal(await resets[0], http2.constants.NGHTTP2_CANCEL);

  const abort = new AbortController();
  const error = await (async () => {
    try {
      for await (
        const _ of streamCall(
          target,
          Watch.method.watch,
          requestsUntil(never),
          abort.signal,
        )
      ) {
        abort.abort(new DOMException("closing", "AbortError"));
      }
    } catch (error) {
      return error;
    }
  })();
  assert.ok(
    error instanceof DOMException && error.name === "AbortError",
    String(error),
  );
  assert.equal(await resets[1], http2.constants.NGHTTP2_CANCEL);
});

Deno.test("a read waiting on a stream that says nothing ends when the signal aborts", async () => {
  const opened = Promise.withResolvers<void>();
  await using member = await fakeMember({
    onStream(stream) {
      stream.respond({ ":status": 200 });
      opened.resolve();
    },
  });
  const target = { channel: member.channel, metadata: {}, maxBytes: 1024 };
  const never = new AbortController().signal;
  const abort = new AbortController();
  const answers = streamCall(
    target,
    Watch.method.watch,
    requestsUntil(never),
    abort.signal,
  );
  const reading = answers.next();
  await opened.promise;
  abort.abort(new DOMException("closing", "AbortError"));
  const error = await reading.then(() => null, (e) => e);
  assert.ok(error instanceof DOMException && error.name === "AbortError");
});

Deno.test("a call to a member that never opens the connection ends when its signal aborts", async () => {
  // A member that accepts the connection and says nothing, as a frozen one.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const channel = new Http2Channel(
    `http://127.0.0.1:${listener.addr.port}`,
    {},
  );
  const connections: Deno.Conn[] = [];
  try {
    const target = { channel, metadata: {}, maxBytes: 1024 };
    for (const method of ["unary", "stream"]) {
      const abort = new AbortController();
      const calling = method === "unary"
        ? unaryCall(target, KV.method.range, {}, abort.signal)
        : streamCall(
          target,
          Watch.method.watch,
          requestsUntil(abort.signal),
          abort.signal,
        ).next();
      if (connections.length === 0) connections.push(await listener.accept());
      abort.abort(new DOMException("gave up", "TimeoutError"));
      const error = await calling.then(() => null, (e) => e);
      assert.ok(error instanceof DOMException, `${method}: ${error}`);
      assert.equal(error.name, "TimeoutError");
    }
  } finally {
    channel[Symbol.dispose]();
    for (const conn of connections) conn.close();
  }
});
