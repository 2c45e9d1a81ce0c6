import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { unaryCall } from "./grpc_unary.ts";
import { KV, RangeResponseSchema } from "./proto/rpc_pb.ts";

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

/** An HTTP/2 server on a free loopback port answering as `answer` says. */
async function fakeMember(answer: Answer) {
  const server = http2.createServer();
  const seen: http2.IncomingHttpHeaders[] = [];
  server.on("stream", (stream, headers) => {
    seen.push(headers);
    const chunks: Uint8Array[] = [];
    stream.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    stream.on("end", () => answer(stream, headers, Buffer.concat(chunks)));
    stream.on("error", () => {});
  });
  const { promise, resolve } = Promise.withResolvers<void>();
  server.listen(0, "127.0.0.1", resolve);
  await promise;
  const { port } = server.address() as { port: number };
  const session = new Http2SessionManager(`http://127.0.0.1:${port}`);
  return {
    session,
    seen,
    async [Symbol.asyncDispose]() {
      session.abort();
      const closed = Promise.withResolvers<void>();
      server.close(() => closed.resolve());
      await closed.promise;
    },
  };
}

function call(
  session: Http2SessionManager,
  signal = new AbortController().signal,
  maxBytes = 1024,
) {
  const key = new TextEncoder().encode("k");
  return unaryCall(
    session,
    KV.method.range,
    { key },
    {
      token: "t0k",
    },
    signal,
    maxBytes,
  );
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
  const answer = await call(member.session);
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
  const error = await failure(() => call(member.session));
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
  const error = await failure(() => call(member.session));
  assert.equal(error.code, Code.NotFound);
  assert.equal(error.rawMessage, "etcdserver: requested lease not found");
});

Deno.test("unaryCall reports as unavailable what is not a gRPC answer: no status, a compressed or cut message, another HTTP status, a reset stream", async () => {
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
  ];
  for (const [what, answer] of cases) {
    await using member = await fakeMember(answer);
    const error = await failure(() => call(member.session), what);
    assert.equal(error.code, Code.Unavailable, `${what}: ${error.message}`);
  }
});

Deno.test("unaryCall refuses an answer over its bound, and a refused connection is unavailable", async () => {
  await using member = await fakeMember(ok);
  const error = await failure(() => call(member.session, undefined, 1));
  assert.equal(error.code, Code.ResourceExhausted);

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const session = new Http2SessionManager(`http://127.0.0.1:${port}`);
  try {
    const refused = await failure(() => call(session));
    assert.equal(refused.code, Code.Unavailable);
  } finally {
    session.abort();
  }
});

Deno.test("an aborted unaryCall fails with the signal's reason and cancels its stream; the session goes on", async () => {
  const cancelled = Promise.withResolvers<number>();
  let first = true;
  await using member = await fakeMember((stream, headers, body) => {
    if (!first) return ok(stream, headers, body);
    first = false;
    stream.on("close", () => cancelled.resolve(stream.rstCode));
    stream.respond({ ":status": 200 });
  });
  const abort = new AbortController();
  const calling = call(member.session, abort.signal);
  // The member has the request once it has answered with headers.
  while (member.seen.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  abort.abort(new DOMException("gave up", "TimeoutError"));
  const error = await calling.then(() => assert.fail("resolved"), (e) => e);
  assert.ok(error instanceof DOMException);
  assert.equal(error.name, "TimeoutError");
  assert.equal(await cancelled.promise, http2.constants.NGHTTP2_CANCEL);
  assert.equal((await call(member.session)).more, true);
});
