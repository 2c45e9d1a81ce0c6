import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { EtcdClient } from "./etcd.ts";
import { EtcdError } from "./etcd_errors.ts";
import { unaryCall } from "./grpc_call.ts";
import { Http2Channel } from "./http2_channel.ts";
import { KV } from "./proto/rpc_pb.ts";

/** A range call on `channel`, as etcd's client makes it; its error. */
async function failedCall(channel: Http2Channel): Promise<ConnectError> {
  const target = { channel, metadata: {}, maxBytes: 1024 };
  try {
    await unaryCall(target, KV.method.range, {}, AbortSignal.timeout(5_000));
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return error;
  }
  assert.fail("the call succeeded");
}

/** A call that succeeds: an empty range answer. */
function answered(channel: Http2Channel): Promise<unknown> {
  const target = { channel, metadata: {}, maxBytes: 1024 };
  return unaryCall(target, KV.method.range, {}, AbortSignal.timeout(5_000));
}

/**
 * A call once the member has ended the connection: the first try may still
 * go on the old one (the client has not seen the end yet) and then fails as
 * unavailable, so etcd's client moves on; the next goes on a new one.
 */
async function answeredAgain(channel: Http2Channel): Promise<void> {
  const first = await answered(channel).then(() => null, (error) => error);
  if (first !== null) {
    assert.ok(first instanceof ConnectError, String(first));
    assert.equal(first.code, Code.Unavailable, first.message);
    await answered(channel);
  }
}

/** An HTTP/2 server answering every call with an empty message. */
async function emptyAnswers() {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200 }, { waitForTrailers: true });
    stream.on(
      "wantTrailers",
      () => stream.sendTrailers({ "grpc-status": "0" }),
    );
    stream.end(new Uint8Array(5));
  });
  const { promise, resolve } = Promise.withResolvers<void>();
  server.listen(0, "127.0.0.1", resolve);
  await promise;
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    sessions,
    async [Symbol.asyncDispose]() {
      for (const session of sessions) session.destroy();
      const closed = Promise.withResolvers<void>();
      server.close(() => closed.resolve());
      await closed.promise;
    },
  };
}

Deno.test("an endpoint that accepts the connection and closes it at once fails the call as unavailable, and the process goes on", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const slamming = (async () => {
    for await (const conn of listener) conn.close();
  })();
  for (let round = 0; round < 3; round++) {
    using channel = new Http2Channel(
      `http://127.0.0.1:${listener.addr.port}`,
      {},
    );
    const error = await failedCall(channel);
    assert.equal(error.code, Code.Unavailable, error.message);
  }
  listener.close();
  await slamming.catch(() => {});
});

Deno.test("after its connection is lost, or the member sends GOAWAY, the channel's next call goes on a new connection", async () => {
  await using member = await emptyAnswers();
  using channel = new Http2Channel(member.url, {});
  await answered(channel);
  assert.equal(member.sessions.size, 1);
  const [first] = member.sessions;
  const lost = Promise.withResolvers<void>();
  first!.on("close", () => lost.resolve());
  first!.destroy();
  await lost.promise;
  await answeredAgain(channel);
  assert.equal(member.sessions.size, 1);
  const [second] = member.sessions;
  assert.notEqual(second, first);

  const away = Promise.withResolvers<void>();
  second!.on("close", () => away.resolve());
  second!.goaway(http2.constants.NGHTTP2_NO_ERROR);
  second!.close();
  await away.promise;
  await answeredAgain(channel);
  const [third] = member.sessions;
  assert.ok(third !== undefined && third !== second);
});

Deno.test("a disposed channel refuses new streams", () => {
  const channel = new Http2Channel("http://127.0.0.1:9", {});
  channel[Symbol.dispose]();
  assert.throws(() => channel.request("/x", {}), /closed/);
});

Deno.test("a disposed etcd client fails a call at once instead of opening a connection", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = new EtcdClient([`http://127.0.0.1:${listener.addr.port}`]);
  client[Symbol.dispose]();
  const error = await client.range({ key: "/" }).then(() => null, (e) => e);
  assert.ok(error instanceof EtcdError, String(error));
  assert.equal(error.code, Code.FailedPrecondition);
  assert.match(error.message, /closed/);
  // Nothing connected: the listener has no connection waiting.
  listener.close();
  const accepted = await listener.accept().then(
    () => "a connection",
    () => null,
  );
  assert.equal(accepted, null);
});
