/**
 * A small etcd v3 client over gRPC (HTTP/2, `etcd_grpc.ts`): KV, txn and
 * leases, with endpoint failover, a timeout per call and etcd's errors as
 * typed errors (`etcd_errors.ts`). The mapping to etcd's messages lives in
 * `etcd_codec.ts`, the streamed watch in `etcd_watch.ts`, authentication and
 * TLS in `etcd_auth.ts`.
 *
 * @module
 */

import type {
  DescMessage,
  DescMethodBiDiStreaming,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { delay } from "../message/io.ts";
import {
  type CallMethod,
  EtcdChannels,
  reasonOf,
  unanswered,
  withTimeout,
} from "./etcd_grpc.ts";
import {
  etcdError,
  EtcdUnavailableError,
  UNAUTHENTICATED,
  UNAVAILABLE,
} from "./etcd_errors.ts";
import {
  type EtcdCredentials,
  type EtcdTls,
  EtcdTokens,
  tlsOptions,
} from "./etcd_auth.ts";
import {
  type Compare,
  decodeRange,
  decodeTxn,
  type KeyRange,
  type PutRequest,
  putRequest,
  rangeKeys,
  type RangeRequest,
  rangeRequest,
  type RangeResponse,
  type TxnOp,
  txnRequest,
  type TxnResponse,
} from "./etcd_codec.ts";
import { Auth, KV, Lease } from "./proto/rpc_pb.ts";

/** Options of {@linkcode EtcdClient}. */
export interface EtcdClientOptions {
  /**
   * How long one call to one member may take before the next endpoint is tried.
   *
   * @default {1000}
   */
  timeoutMs?: number | undefined;
  /**
   * How long one call may keep trying endpoints before it fails with
   * {@linkcode EtcdUnavailableError}.
   *
   * @default {5000}
   */
  retryForMs?: number | undefined;
  /** The user to authenticate as, when etcd runs with auth enabled. */
  credentials?: EtcdCredentials | undefined;
  /** A private CA and a client certificate, for `https://` endpoints. */
  tls?: EtcdTls | undefined;
}

/** A lease grant's answer. */
export interface Lease {
  /** The lease id. */
  id: string;
  /** Its TTL in seconds, as etcd granted it (may exceed the asked TTL). */
  ttl: number;
}

/**
 * Calls etcd's v3 gRPC services, moving to the next endpoint whenever one
 * fails to answer.
 *
 * @example Reading a prefix
 * ```ts ignore
 * using etcd = new EtcdClient(["http://127.0.0.1:23791"]);
 * const { kvs } = await etcd.range({ key: "/pklock/v1/q/", prefix: true });
 * ```
 */
export class EtcdClient implements Disposable {
  readonly #endpoints: readonly string[];
  readonly #timeoutMs: number;
  readonly #retryForMs: number;
  readonly #channels: EtcdChannels;
  readonly #tokens: EtcdTokens | undefined;
  #current = 0;

  /**
   * @param endpoints Client URLs of the members (`http://host:port`).
   * @param options Timeouts, credentials, TLS.
   * @throws {RangeError} When `endpoints` is empty.
   * @throws {TypeError} When the TLS setting is incomplete.
   */
  constructor(endpoints: readonly string[], options: EtcdClientOptions = {}) {
    if (endpoints.length === 0) {
      throw new RangeError("Cannot use etcd: no endpoints");
    }
    this.#endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    this.#timeoutMs = options.timeoutMs ?? 1_000;
    this.#retryForMs = options.retryForMs ?? 5_000;
    this.#channels = new EtcdChannels(tlsOptions(options.tls));
    const credentials = options.credentials;
    this.#tokens = credentials && new EtcdTokens(
      credentials,
      (request) =>
        this.#call(Auth.method.authenticate, request, undefined, undefined),
    );
  }

  /** How many auth tokens etcd has issued to this client (0 without auth). */
  get authentications(): number {
    return this.#tokens?.authentications ?? 0;
  }

  /** The endpoint the next call goes to. */
  get endpoint(): string {
    return this.#endpoints[this.#current]!;
  }

  /**
   * Moves to the next endpoint, unless another caller already moved off
   * `failed`.
   *
   * @param failed The endpoint that failed.
   */
  rotate(failed: string): void {
    if (this.endpoint === failed) {
      this.#current = (this.#current + 1) % this.#endpoints.length;
    }
  }

  /**
   * Reads keys.
   *
   * @param request Which keys, at which revision.
   * @param signal Abandons the call.
   * @returns The keys and the revision read.
   * @throws {EtcdError} What etcd answered.
   */
  async range(
    request: RangeRequest,
    signal?: AbortSignal,
  ): Promise<RangeResponse> {
    return decodeRange(
      await this.call(KV.method.range, rangeRequest(request), signal),
    );
  }

  /**
   * Writes one key.
   *
   * @param request The key, value and lease.
   * @param signal Abandons the call.
   * @returns The revision of the write.
   * @throws {EtcdError} What etcd answered.
   */
  async put(request: PutRequest, signal?: AbortSignal): Promise<number> {
    const answer = await this.call(KV.method.put, putRequest(request), signal);
    return Number(answer.header?.revision ?? 0);
  }

  /**
   * Deletes keys.
   *
   * @param range Which keys.
   * @param signal Abandons the call.
   * @returns How many keys went, and the revision after.
   * @throws {EtcdError} What etcd answered.
   */
  async deleteRange(
    range: KeyRange,
    signal?: AbortSignal,
  ): Promise<{ deleted: number; revision: number }> {
    const answer = await this.call(
      KV.method.deleteRange,
      rangeKeys(range),
      signal,
    );
    return {
      deleted: Number(answer.deleted),
      revision: Number(answer.header?.revision ?? 0),
    };
  }

  /**
   * Runs a transaction: if every comparison holds, `success`, else `failure`.
   *
   * @param compare The comparisons.
   * @param success Run when they all hold.
   * @param failure Run otherwise.
   * @param signal Abandons the call.
   * @returns Which branch ran, its answers and the revision.
   * @throws {EtcdError} What etcd answered.
   */
  async txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
    signal?: AbortSignal,
  ): Promise<TxnResponse> {
    const request = txnRequest(compare, success, failure);
    return decodeTxn(await this.call(KV.method.txn, request, signal));
  }

  /**
   * Grants a lease.
   *
   * @param ttl Its TTL in seconds (etcd may raise it to its minimum).
   * @param signal Abandons the call.
   * @returns The lease.
   * @throws {EtcdError} What etcd answered.
   */
  async leaseGrant(ttl: number, signal?: AbortSignal): Promise<Lease> {
    const request = { TTL: BigInt(ttl) };
    const answer = await this.call(Lease.method.leaseGrant, request, signal);
    return { id: String(answer.ID), ttl: Number(answer.TTL) };
  }

  /**
   * Revokes a lease, deleting every key attached to it.
   *
   * @param id The lease.
   * @param signal Abandons the call.
   * @throws {EtcdError} What etcd answered (code 5 for an unknown lease).
   */
  async leaseRevoke(id: string, signal?: AbortSignal): Promise<void> {
    await this.call(Lease.method.leaseRevoke, { ID: BigInt(id) }, signal);
  }

  /**
   * Renews a lease once: one `LeaseKeepAlive` stream per renewal, which sends
   * one request and reads its one answer.
   *
   * @param id The lease.
   * @param signal Abandons the call.
   * @returns The TTL etcd renewed it for; 0 when the lease is gone.
   * @throws {EtcdError} What etcd answered.
   */
  async leaseKeepAlive(id: string, signal?: AbortSignal): Promise<number> {
    const method = Lease.method.leaseKeepAlive;
    const answer = await this.call(method, { ID: BigInt(id) }, signal);
    return Number(answer.TTL);
  }

  /**
   * Reads a lease's remaining time.
   *
   * @param id The lease.
   * @param signal Abandons the call.
   * @returns Seconds left (-1 when the lease is gone) and the granted TTL.
   * @throws {EtcdError} What etcd answered.
   */
  async leaseTimeToLive(
    id: string,
    signal?: AbortSignal,
  ): Promise<{ ttl: number; grantedTtl: number }> {
    const method = Lease.method.leaseTimeToLive;
    const answer = await this.call(method, { ID: BigInt(id) }, signal);
    return { ttl: Number(answer.TTL), grantedTtl: Number(answer.grantedTTL) };
  }

  /**
   * The auth token to send, authenticating first when there is none.
   *
   * @param signal Stops the wait.
   * @returns The token, or `undefined` without credentials.
   * @throws {EtcdAuthError} When etcd refuses the user or password.
   */
  async token(signal?: AbortSignal): Promise<string | undefined> {
    return await this.#tokens?.get(signal);
  }

  /**
   * Forgets a token etcd refused as invalid (expired): the next call
   * authenticates again.
   *
   * @param token The refused token.
   */
  refused(token: string | undefined): void {
    if (token !== undefined) this.#tokens?.refused(token);
  }

  /**
   * Opens a stream to one endpoint with this client's TLS and `token`.
   *
   * @param endpoint The member's URL.
   * @param method The streaming method.
   * @param requests What to send; the stream is half-closed when it ends.
   * @param token The auth token, if any.
   * @param signal Ends the stream.
   * @returns The answers.
   */
  stream<I extends DescMessage, O extends DescMessage>(
    endpoint: string,
    method: DescMethodBiDiStreaming<I, O>,
    requests: AsyncIterable<MessageInitShape<I>>,
    token: string | undefined,
    signal: AbortSignal,
  ): Promise<AsyncIterable<MessageShape<O>>> {
    return this.#channels.stream(endpoint, method, requests, token, signal);
  }

  /**
   * Sends one request to one endpoint with this client's TLS and `token`,
   * with no retry, and reads its answer: every call goes through here. A
   * bidi method (LeaseKeepAlive) gets a stream of its own, with the one
   * request, and its first answer.
   *
   * @param endpoint The member's URL.
   * @param method The method.
   * @param request The request.
   * @param token The auth token, if any.
   * @param signal Abandons the call.
   * @returns The answer.
   * @throws {ConnectError} What etcd or the transport answered.
   */
  send<I extends DescMessage, O extends DescMessage>(
    endpoint: string,
    method: CallMethod<I, O>,
    request: MessageInitShape<I>,
    token: string | undefined,
    signal: AbortSignal,
  ): Promise<MessageShape<O>> {
    return this.#channels.send(endpoint, method, request, token, signal);
  }

  /**
   * Calls etcd, trying endpoint after endpoint until one answers or the
   * retry budget is spent. Only "unavailable" answers and transport failures
   * (a refused connection, a reset stream, a member that took longer than
   * `timeoutMs`) move on; a refused (expired) auth token is renewed once and
   * the call repeated; any other etcd error is thrown at once.
   *
   * @param method The method (`KV.method.range`).
   * @param request The request.
   * @param signal Abandons the call.
   * @returns The answer.
   * @throws {EtcdError} What etcd answered, typed.
   */
  async call<I extends DescMessage, O extends DescMessage>(
    method: CallMethod<I, O>,
    request: MessageInitShape<I>,
    signal?: AbortSignal,
  ): Promise<MessageShape<O>> {
    return await this.#call(method, request, signal, this.#tokens);
  }

  /** Closes the connections to the members. */
  [Symbol.dispose](): void {
    this.#channels[Symbol.dispose]();
  }

  async #call<I extends DescMessage, O extends DescMessage>(
    method: CallMethod<I, O>,
    request: MessageInitShape<I>,
    signal: AbortSignal | undefined,
    tokens: EtcdTokens | undefined,
  ): Promise<MessageShape<O>> {
    const name = `${method.parent.name}.${method.name}`;
    const until = performance.now() + this.#retryForMs;
    let last: unknown;
    let renewed = false;
    for (let tried = 0;; tried++) {
      signal?.throwIfAborted();
      const endpoint = this.endpoint;
      const token = await tokens?.get(signal);
      try {
        return await withTimeout(
          this.#timeoutMs,
          signal,
          (bounded) => this.send(endpoint, method, request, token, bounded),
        );
      } catch (failure) {
        signal?.throwIfAborted();
        const error = etcdError(name, failure);
        if (error.code === UNAUTHENTICATED && token !== undefined && !renewed) {
          tokens!.refused(token);
          renewed = true;
          continue;
        }
        if (!unanswered(error.code)) throw error;
        last = error;
      }
      this.rotate(endpoint);
      if (performance.now() >= until) {
        throw new EtcdUnavailableError(
          `Cannot call etcd "${name}": no endpoint answered within ${this.#retryForMs} ms: ${
            reasonOf(last)
          }`,
          UNAVAILABLE,
          { cause: last },
        );
      }
      // A pause after each full round, so a cluster without a leader is not
      // hammered.
      if ((tried + 1) % this.#endpoints.length === 0) await delay(100, signal);
    }
  }
}
