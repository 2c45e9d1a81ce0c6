/**
 * One unary gRPC call on an HTTP/2 session: gRPC's framing of the request
 * and of the answer (a flag byte, a 4-byte length, the message) and its
 * status (`grpc-status` and `grpc-message`, in the trailers or, for an
 * answer with no message, in the headers).
 *
 * Connect's own unary call does the same through a pipeline of async
 * iterables; measured here against one etcd member, a txn cost its caller
 * about 790 µs of CPU through Connect and about 300 µs this way (see
 * `docs/benchmarks.md`). Connect's session manager still owns the
 * connection (opening it, opening it again after it fails) and the streams
 * (watch, keep-alive) stay on Connect's transport.
 *
 * @module
 */

import type { ClientHttp2Stream } from "node:http2";
import {
  create,
  type DescMessage,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";

/** The bytes before each message: its compressed flag and its length. */
const PREFIX_BYTES = 5;
/** gRPC's status of a call that succeeded (Connect's `Code` has no `Ok`). */
const GRPC_OK = 0;
/** HTTP/2's `CANCEL` error code, which ends a stream we abandon. */
const H2_CANCEL = 8;

/**
 * Sends one request and reads its answer.
 *
 * @param session The member's HTTP/2 session.
 * @param method The unary method.
 * @param request The request.
 * @param metadata Headers sent with it (the auth `token`).
 * @param signal Abandons the call: its stream is cancelled, and the call
 *   fails with the signal's reason.
 * @param maxBytes The largest answer read.
 * @returns The answer.
 * @throws {ConnectError} etcd's status when it answered with one; otherwise
 *   `unavailable` (the connection failed, the stream was reset, the answer
 *   was not a gRPC answer), with the transport's error as its cause.
 */
export async function unaryCall<I extends DescMessage, O extends DescMessage>(
  session: Http2SessionManager,
  method: DescMethodUnary<I, O>,
  request: MessageInitShape<I>,
  metadata: Record<string, string>,
  signal: AbortSignal,
  maxBytes: number,
): Promise<MessageShape<O>> {
  signal.throwIfAborted();
  const message = toBinary(method.input, create(method.input, request));
  const body = new Uint8Array(PREFIX_BYTES + message.length);
  new DataView(body.buffer).setUint32(1, message.length);
  body.set(message, PREFIX_BYTES);
  let stream: ClientHttp2Stream;
  try {
    stream = await session.request(
      "POST",
      `/${method.parent.typeName}/${method.name}`,
      { ...metadata, "content-type": "application/grpc+proto", te: "trailers" },
      {},
    );
  } catch (error) {
    throw unavailable("cannot open a stream", error);
  }
  const answer = await read(stream, session, signal, maxBytes, body);
  return fromBinary(method.output, answer);
}

/** Writes `body`, then reads the stream to its end: the answer's message. */
function read(
  stream: ClientHttp2Stream,
  session: Http2SessionManager,
  signal: AbortSignal,
  maxBytes: number,
  body: Uint8Array,
): Promise<Uint8Array> {
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let status: Record<string, unknown> | undefined;
  let failure: unknown;
  const fail = (error: unknown) => {
    failure ??= error;
    if (!stream.closed) stream.close(H2_CANCEL);
  };
  const abort = () => fail(signal.reason);
  signal.addEventListener("abort", abort, { once: true });
  stream.on("response", (headers) => {
    const code = headers[":status"];
    if (code !== 200) fail(unavailable(`HTTP status ${code}`));
    else if (headers["grpc-status"] !== undefined) status = headers;
  });
  stream.on("trailers", (trailers) => status = trailers);
  stream.on("data", (chunk: Uint8Array) => {
    session.notifyResponseByteRead(stream);
    size += chunk.length;
    if (size > PREFIX_BYTES + maxBytes) {
      fail(
        new ConnectError(
          `answer over ${maxBytes} bytes`,
          Code.ResourceExhausted,
        ),
      );
    } else chunks.push(chunk);
  });
  stream.on("error", (error) => fail(unavailable("stream failed", error)));
  stream.on("close", () => {
    signal.removeEventListener("abort", abort);
    if (failure !== undefined) reject(failure);
    else {
      try {
        resolve(answerOf(chunks, size, status, stream.rstCode));
      } catch (error) {
        reject(error);
      }
    }
  });
  stream.end(body);
  return promise;
}

/** The one message of a finished stream, or why there is none. */
function answerOf(
  chunks: readonly Uint8Array[],
  size: number,
  status: Record<string, unknown> | undefined,
  rstCode: number | undefined,
): Uint8Array {
  if (status === undefined) {
    throw unavailable(`stream ended with no gRPC status (reset ${rstCode})`);
  }
  const code = Number(status["grpc-status"]);
  if (code !== GRPC_OK) {
    const text = String(status["grpc-message"] ?? "");
    throw new ConnectError(decodeMessage(text), code);
  }
  const data = concat(chunks, size);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (
    data.length < PREFIX_BYTES || data[0] !== 0 ||
    view.getUint32(1) !== data.length - PREFIX_BYTES
  ) {
    throw unavailable(`not one uncompressed message (${data.length} bytes)`);
  }
  return data.subarray(PREFIX_BYTES);
}

/** `grpc-message` is percent-encoded; a malformed one is shown as it is. */
function decodeMessage(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function concat(chunks: readonly Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

/** A failure of the transport, not an answer of etcd's. */
function unavailable(what: string, cause?: unknown): ConnectError {
  const text = cause instanceof Error ? `${what}: ${cause.message}` : what;
  return new ConnectError(text, Code.Unavailable, undefined, undefined, cause);
}
