/**
 * The gRPC channels to etcd's members: one HTTP/2 connection per endpoint
 * ({@linkcode Http2Channel}), opened when first used and opened again after
 * it fails, carrying the calls of `grpc_call.ts`; and the bound that ends one
 * call.
 *
 * @module
 */

import type { SecureClientSessionOptions } from "node:http2";
import type {
  DescMessage,
  DescMethodBiDiStreaming,
  DescMethodUnary,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type CallTarget, streamCall, unaryCall } from "./grpc_call.ts";
import { Http2Channel } from "./http2_channel.ts";
import { LinkedAbort } from "./linked_abort.ts";

/**
 * The largest answer read, as etcd's own Go client allows (`math.MaxInt32`):
 * a range of every request key of a busy cluster must not fail for its size.
 */
const READ_MAX_BYTES = 0x7fff_ffff;

/** A method one request is sent to: unary, or bidi with one request. */
export type CallMethod<I extends DescMessage, O extends DescMessage> =
  | DescMethodUnary<I, O>
  | DescMethodBiDiStreaming<I, O>;

/**
 * The channels of a client, one per endpoint.
 *
 * @example Calling a member
 * ```ts ignore
 * using channels = new EtcdChannels({});
 * const answer = await channels.send(
 *   "http://127.0.0.1:2379", KV.method.range, { key }, undefined, signal,
 * );
 * ```
 */
export class EtcdChannels implements Disposable {
  readonly #tls: SecureClientSessionOptions;
  readonly #open = new Map<string, Http2Channel>();
  #disposed = false;

  /**
   * @param tls The TLS options of `https://` endpoints (CA, client
   *   certificate).
   */
  constructor(tls: SecureClientSessionOptions) {
    this.#tls = tls;
  }

  /**
   * Opens a stream to one member.
   *
   * @param endpoint The member's client URL.
   * @param method The streaming method.
   * @param requests What to send; the stream is half-closed when it ends.
   * @param token The auth token, sent as the `token` metadata.
   * @param signal Ends the stream.
   * @returns The answers.
   */
  // deno-lint-ignore require-await -- async, so a closed client rejects
  async stream<I extends DescMessage, O extends DescMessage>(
    endpoint: string,
    method: DescMethodBiDiStreaming<I, O>,
    requests: AsyncIterable<MessageInitShape<I>>,
    token: string | undefined,
    signal: AbortSignal,
  ): Promise<AsyncIterable<MessageShape<O>>> {
    const target = this.#target(endpoint, token);
    return streamCall(target, method, requests, signal);
  }

  /**
   * Sends one request to one member and reads its answer; a bidi method
   * gets a stream of its own, with the one request, and its first answer.
   *
   * @param endpoint The member's client URL.
   * @param method The method.
   * @param request The request.
   * @param token The auth token, sent as the `token` metadata.
   * @param signal Abandons the call.
   * @returns The answer.
   * @throws {ConnectError} What the member or the transport answered.
   */
  async send<I extends DescMessage, O extends DescMessage>(
    endpoint: string,
    method: CallMethod<I, O>,
    request: MessageInitShape<I>,
    token: string | undefined,
    signal: AbortSignal,
  ): Promise<MessageShape<O>> {
    const target = this.#target(endpoint, token);
    if (method.methodKind === "unary") {
      return await unaryCall(target, method, request, signal);
    }
    const answers = streamCall(target, method, once(request), signal);
    for await (const answer of answers) return answer;
    throw new ConnectError(`${method.name}: no answer`, Code.Unknown);
  }

  #target(endpoint: string, token: string | undefined): CallTarget {
    if (this.#disposed) {
      throw new ConnectError(
        "the etcd client is closed",
        Code.FailedPrecondition,
      );
    }
    let channel = this.#open.get(endpoint);
    if (channel === undefined) {
      channel = new Http2Channel(endpoint, this.#tls);
      this.#open.set(endpoint, channel);
    }
    const metadata: Record<string, string> = token === undefined
      ? {}
      : { token };
    return { channel, metadata, maxBytes: READ_MAX_BYTES };
  }

  /**
   * Closes every connection; a call still under way fails, and a later one
   * fails at once (`FAILED_PRECONDITION`), opening no connection.
   */
  [Symbol.dispose](): void {
    this.#disposed = true;
    for (const channel of this.#open.values()) channel[Symbol.dispose]();
    this.#open.clear();
  }
}

/**
 * Whether a failed call's code says the member did not answer, rather than
 * answered: etcd's "unavailable" (no leader, leader changed, request timed
 * out) and the transport's failures (Connect reports a reset stream or a
 * lost connection as aborted or internal, our own timeout as cancelled).
 * The call moves on to the next endpoint.
 *
 * @param code The gRPC status code.
 * @returns Whether to try the next endpoint.
 */
export function unanswered(code: number): boolean {
  return UNANSWERED.has(code);
}

const UNANSWERED: ReadonlySet<number> = new Set([
  Code.Unavailable,
  Code.Canceled,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.Internal,
]);

/** One item, as a stream of requests. */
async function* once<T>(item: T): AsyncGenerator<T> {
  yield item;
}

/**
 * Runs `run` with a signal that aborts after `ms`, or when `signal` does, and
 * fails then even if `run` has not noticed: the bound holds whatever the
 * transport does with the abort. The timer is cleared as soon as either
 * settles.
 *
 * @param ms The bound, in milliseconds.
 * @param signal Aborts earlier.
 * @param run What to bound.
 * @returns What `run` returns.
 * @throws The abort's reason (a `TimeoutError` after `ms`).
 */
export async function withTimeout<T>(
  ms: number,
  signal: AbortSignal | undefined,
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  using bounded = new LinkedAbort(signal);
  const aborted = Promise.withResolvers<never>();
  const abort = () => aborted.reject(bounded.signal.reason);
  bounded.signal.addEventListener("abort", abort, { once: true });
  const timer = setTimeout(
    () =>
      bounded.abort(
        new DOMException(`Timed out after ${ms} ms`, "TimeoutError"),
      ),
    ms,
  );
  try {
    if (bounded.signal.aborted) abort();
    const running = run(bounded.signal);
    // Once the bound has won, a late failure of `run` is nobody's to see.
    running.catch(() => {});
    return await Promise.race([running, aborted.promise]);
  } finally {
    clearTimeout(timer);
    bounded.signal.removeEventListener("abort", abort);
  }
}

/**
 * Why a call failed, for people: a transport's error says little without its
 * cause (a refused connection, a certificate etcd refused).
 *
 * @param error What the call threw.
 * @returns Its message, and its cause's.
 */
export function reasonOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (!(cause instanceof Error)) return error.message;
  // A typed error already carries its Connect cause's text.
  const said = cause instanceof ConnectError ? cause.rawMessage : cause.message;
  return error.message.includes(said)
    ? error.message
    : `${error.message}: ${cause.message}`;
}
