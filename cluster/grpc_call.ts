/**
 * gRPC calls on an HTTP/2 session: unary calls and bidirectional streams,
 * with gRPC's framing of each message (a flag byte, a 4-byte length, the
 * message) and its status (`grpc-status` and `grpc-message`, in the
 * trailers or, for an answer with no message, in the headers).
 *
 * Connect's own calls do the same through a pipeline of async iterables;
 * measured here against one etcd member, a txn cost its caller about 790 µs
 * of CPU through Connect and about 300 µs this way (see
 * `docs/benchmarks.md`). The connection is an {@linkcode Http2Channel}.
 *
 * @module
 */

import type { ClientHttp2Stream, IncomingHttpHeaders } from "node:http2";
import {
  create,
  type DescMessage,
  type DescMethodBiDiStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2Channel } from "./http2_channel.ts";

/** The bytes before each message: its compressed flag and its length. */
const PREFIX_BYTES = 5;
/** gRPC's error codes: `CANCELLED` (1) to `UNAUTHENTICATED` (16). */
const FIRST_ERROR = 1;
const LAST_ERROR = 16;
/** HTTP/2's `CANCEL` error code, which ends a stream we abandon. */
const H2_CANCEL = 8;

/** Where a call goes, and what it may read. */
export interface CallTarget {
  /** The member's HTTP/2 connection. */
  channel: Http2Channel;
  /** Headers sent with the call (the auth `token`). */
  metadata: Record<string, string>;
  /** The largest message read. */
  maxBytes: number;
}

/**
 * Sends one request and reads its answer.
 *
 * @param target Where to, and the largest answer read.
 * @param method The unary method.
 * @param request The request.
 * @param signal Abandons the call: its stream is cancelled, and the call
 *   fails with the signal's reason.
 * @returns The answer.
 * @throws {ConnectError} etcd's status when it answered with one; otherwise
 *   `unavailable` (the connection failed, the stream was reset, the answer
 *   was not a gRPC answer), with the transport's error as its cause.
 */
export async function unaryCall<I extends DescMessage, O extends DescMessage>(
  target: CallTarget,
  method: DescMethodUnary<I, O>,
  request: MessageInitShape<I>,
  signal: AbortSignal,
): Promise<MessageShape<O>> {
  signal.throwIfAborted();
  const body = framed(method.input, request);
  const stream = open(target, method);
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  const frames = new Frames(target.maxBytes);
  const answers: Uint8Array[] = [];
  const status = new CallStatus(stream);
  let settled = false;
  const fail = (error: unknown) => {
    if (!settled) reject(error);
    settled = true;
    if (!stream.closed) stream.close(H2_CANCEL);
  };
  const abort = () => fail(signal.reason);
  signal.addEventListener("abort", abort, { once: true });
  stream.on("data", (chunk: Uint8Array) => {
    try {
      answers.push(...frames.push(chunk));
    } catch (error) {
      fail(error);
    }
  });
  stream.on("error", (error) => fail(unavailable("stream failed", error)));
  stream.on("close", () => {
    signal.removeEventListener("abort", abort);
    if (settled) return;
    try {
      status.check();
      frames.end();
      if (answers.length !== 1) {
        throw unavailable(`${answers.length} messages in a unary answer`);
      }
      settled = true;
      resolve(answers[0]!);
    } catch (error) {
      fail(error);
    }
  });
  stream.end(body);
  return fromBinary(method.output, await promise);
}

/**
 * Opens a bidirectional stream: sends `requests` as they come (the stream
 * is half-closed when they end) and reads the answers as they come. A
 * consumer that stops reading stops the stream being read, so HTTP/2's
 * flow control holds the member back; one that leaves the loop cancels the
 * stream.
 *
 * @param target Where to, and the largest answer read.
 * @param method The streaming method.
 * @param requests What to send.
 * @param signal Ends the stream: it is cancelled, and reading fails with
 *   the signal's reason.
 * @returns The answers.
 * @throws {ConnectError} As {@linkcode unaryCall}, once the answers end.
 */
export async function* streamCall<
  I extends DescMessage,
  O extends DescMessage,
>(
  target: CallTarget,
  method: DescMethodBiDiStreaming<I, O>,
  requests: AsyncIterable<MessageInitShape<I>>,
  signal: AbortSignal,
): AsyncGenerator<MessageShape<O>, void, undefined> {
  signal.throwIfAborted();
  const stream = open(target, method);
  const cancel = () => {
    if (!stream.closed) stream.close(H2_CANCEL);
  };
  signal.addEventListener("abort", cancel, { once: true });
  // The reader sees a failure as its loop's; one after it has left (the
  // session closed under the cancelled stream) is nobody's to see.
  stream.on("error", () => {});
  const status = new CallStatus(stream);
  const frames = new Frames(target.maxBytes);
  const chunks = (stream as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  void send(stream, method.input, requests).catch(cancel);
  try {
    try {
      for (;;) {
        const chunk = await chunks.next();
        if (chunk.done) break;
        for (const message of frames.push(chunk.value)) {
          yield fromBinary(method.output, message);
        }
      }
    } catch (error) {
      signal.throwIfAborted();
      if (error instanceof ConnectError) throw error;
      throw unavailable("stream failed", error);
    }
    signal.throwIfAborted();
    status.check();
    frames.end();
  } finally {
    signal.removeEventListener("abort", cancel);
    if (!stream.closed) stream.close(H2_CANCEL);
  }
}

/** Writes each request as it comes, waiting while the stream is full. */
async function send<I extends DescMessage>(
  stream: ClientHttp2Stream,
  schema: I,
  requests: AsyncIterable<MessageInitShape<I>>,
): Promise<void> {
  for await (const request of requests) {
    if (stream.closed) return;
    if (!stream.write(framed(schema, request))) {
      await new Promise<void>((resolve) => {
        const go = () => {
          stream.off("drain", go);
          stream.off("close", go);
          resolve();
        };
        stream.on("drain", go);
        stream.on("close", go);
      });
    }
  }
  if (!stream.closed) stream.end();
}

/** A call's stream; it is open at once, its listeners added before any event. */
function open(
  { channel, metadata }: CallTarget,
  method: DescMethodUnary | DescMethodBiDiStreaming,
): ClientHttp2Stream {
  try {
    return channel.request(
      `/${method.parent.typeName}/${method.name}`,
      { ...metadata, "content-type": "application/grpc+proto", te: "trailers" },
    );
  } catch (error) {
    throw unavailable("cannot open a stream", error);
  }
}

/** A message, in gRPC's framing. */
function framed<I extends DescMessage>(
  schema: I,
  request: MessageInitShape<I>,
): Uint8Array {
  const message = toBinary(schema, create(schema, request));
  const body = new Uint8Array(PREFIX_BYTES + message.length);
  new DataView(body.buffer).setUint32(1, message.length);
  body.set(message, PREFIX_BYTES);
  return body;
}

/** The status of a call: from its headers, or from its trailers. */
class CallStatus {
  #headers: IncomingHttpHeaders | undefined;
  #status: IncomingHttpHeaders | undefined;
  readonly #stream: ClientHttp2Stream;

  constructor(stream: ClientHttp2Stream) {
    this.#stream = stream;
    stream.on("response", (headers) => {
      this.#headers = headers;
      if (headers["grpc-status"] !== undefined) this.#status = headers;
    });
    stream.on("trailers", (trailers) => this.#status = trailers);
  }

  /**
   * Throws unless the call ended well.
   *
   * @throws {ConnectError} etcd's status, or `unavailable`.
   */
  check(): void {
    const http = this.#headers?.[":status"];
    if (http !== undefined && Number(http) !== 200) {
      throw unavailable(`HTTP status ${http}`);
    }
    if (this.#status === undefined) {
      throw unavailable(
        `stream ended with no gRPC status (reset ${this.#stream.rstCode})`,
      );
    }
    const status = String(this.#status["grpc-status"]);
    if (status === "0") return;
    const code = /^\d{1,2}$/.test(status) ? Number(status) : NaN;
    if (!(code >= FIRST_ERROR && code <= LAST_ERROR)) {
      throw unavailable(`not a gRPC status: grpc-status ${status}`);
    }
    const text = String(this.#status["grpc-message"] ?? "");
    throw new ConnectError(decodeMessage(text), code);
  }
}

/**
 * Splits the bytes of an answer into its messages, as they come. A message
 * over several chunks is copied once, when it is complete.
 */
class Frames {
  readonly #maxBytes: number;
  #chunks: Uint8Array[] = [];
  #size = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Takes more bytes.
   *
   * @throws {ConnectError} For a compressed message, or one over the bound.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    const messages: Uint8Array[] = [];
    while (this.#size >= PREFIX_BYTES) {
      const prefix = this.#front(PREFIX_BYTES, false);
      if (prefix[0] !== 0) {
        throw unavailable("not an uncompressed gRPC message");
      }
      const view = new DataView(prefix.buffer, prefix.byteOffset, PREFIX_BYTES);
      const length = view.getUint32(1);
      if (length > this.#maxBytes) {
        throw new ConnectError(
          `answer over ${this.#maxBytes} bytes`,
          Code.ResourceExhausted,
        );
      }
      if (this.#size < PREFIX_BYTES + length) break;
      messages.push(
        this.#front(PREFIX_BYTES + length, true).subarray(
          PREFIX_BYTES,
        ),
      );
    }
    return messages;
  }

  /**
   * The answer has ended.
   *
   * @throws {ConnectError} When it ended within a message.
   */
  end(): void {
    if (this.#size > 0) {
      throw unavailable(`a message cut after ${this.#size} bytes`);
    }
  }

  /** The first `n` bytes (there are as many), taken off when `take`. */
  #front(n: number, take: boolean): Uint8Array {
    const first = this.#chunks[0]!;
    let bytes: Uint8Array;
    if (first.length >= n) bytes = first.subarray(0, n);
    else {
      bytes = new Uint8Array(n);
      let at = 0;
      for (let i = 0; at < n; i++) {
        const part = this.#chunks[i]!.subarray(0, n - at);
        bytes.set(part, at);
        at += part.length;
      }
    }
    if (take) this.#drop(n);
    return bytes;
  }

  /** Takes `n` bytes off; the chunks used up go in one splice. */
  #drop(n: number): void {
    this.#size -= n;
    let used = 0;
    while (n > 0) {
      const first = this.#chunks[used]!;
      if (first.length > n) {
        this.#chunks[used] = first.subarray(n);
        break;
      }
      n -= first.length;
      used++;
    }
    this.#chunks.splice(0, used);
  }
}

/** `grpc-message` is percent-encoded; a malformed one is shown as it is. */
function decodeMessage(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** A failure of the transport, not an answer of etcd's. */
function unavailable(what: string, cause?: unknown): ConnectError {
  const text = cause instanceof Error ? `${what}: ${cause.message}` : what;
  return new ConnectError(text, Code.Unavailable, undefined, undefined, cause);
}
