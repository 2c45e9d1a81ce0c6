/**
 * A small etcd v3 client over etcd's JSON gateway with plain `fetch`: KV,
 * txn and leases, with endpoint failover, a timeout per request and etcd's
 * errors as typed errors (`etcd_errors.ts`). The JSON mapping lives in
 * `etcd_codec.ts`, the streamed watch in `etcd_watch.ts`, authentication and
 * TLS in `etcd_auth.ts`, one request and its timeout in `etcd_http.ts`.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import { postJson, readJson, reasonOf, withTimeout } from "./etcd_http.ts";
import {
  EtcdError,
  etcdError,
  EtcdUnavailableError,
  UNAUTHENTICATED,
  UNAVAILABLE,
} from "./etcd_errors.ts";
import {
  type EtcdCredentials,
  type EtcdTls,
  EtcdTokens,
  tlsClient,
} from "./etcd_auth.ts";
import {
  type Compare,
  decodeRange,
  decodeTxn,
  type GatewayJson,
  type KeyRange,
  putBody,
  type PutRequest,
  rangeBody,
  rangeKeys,
  type RangeRequest,
  type RangeResponse,
  revisionOf,
  txnBody,
  type TxnOp,
  type TxnResponse,
} from "./etcd_codec.ts";

/** Options of {@linkcode EtcdClient}. */
export interface EtcdClientOptions {
  /**
   * How long one HTTP request may take before the next endpoint is tried.
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
 * Calls etcd's v3 JSON gateway, moving to the next endpoint whenever one fails
 * to answer.
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
  readonly #http: Deno.HttpClient | undefined;
  readonly #tokens: EtcdTokens | undefined;
  #current = 0;

  /**
   * @param endpoints Client URLs of the members (`http://host:port`).
   * @param options Timeouts, credentials, TLS.
   * @throws {RangeError} When `endpoints` is empty.
   * @throws {TypeError} When the TLS setting is incomplete or unreadable.
   */
  constructor(endpoints: readonly string[], options: EtcdClientOptions = {}) {
    if (endpoints.length === 0) {
      throw new RangeError("Cannot use etcd: no endpoints");
    }
    this.#endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    this.#timeoutMs = options.timeoutMs ?? 1_000;
    this.#retryForMs = options.retryForMs ?? 5_000;
    this.#http = tlsClient(options.tls);
    const credentials = options.credentials;
    this.#tokens = credentials && new EtcdTokens(
      credentials,
      (body) =>
        this.#call("/v3/auth/authenticate", JSON.stringify(body), undefined),
    );
  }

  /** How many auth tokens etcd has issued to this client (0 without auth). */
  get authentications(): number {
    return this.#tokens?.authentications ?? 0;
  }

  /** The endpoint the next request goes to. */
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
      await this.call("/v3/kv/range", rangeBody(request), signal),
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
    const body = await this.call("/v3/kv/put", putBody(request), signal);
    return revisionOf(body);
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
    const body = await this.call(
      "/v3/kv/deleterange",
      rangeKeys(range),
      signal,
    );
    return { deleted: Number(body.deleted ?? 0), revision: revisionOf(body) };
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
    const body = await this.call(
      "/v3/kv/txn",
      txnBody(compare, success, failure),
      signal,
    );
    return decodeTxn(body);
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
    const body = await this.call(
      "/v3/lease/grant",
      { TTL: String(ttl) },
      signal,
    );
    return { id: String(body.ID), ttl: Number(body.TTL ?? 0) };
  }

  /**
   * Revokes a lease, deleting every key attached to it.
   *
   * @param id The lease.
   * @param signal Abandons the call.
   * @throws {EtcdError} What etcd answered (code 5 for an unknown lease).
   */
  async leaseRevoke(id: string, signal?: AbortSignal): Promise<void> {
    await this.call("/v3/lease/revoke", { ID: id }, signal);
  }

  /**
   * Renews a lease once.
   *
   * @param id The lease.
   * @param signal Abandons the call.
   * @returns The TTL etcd renewed it for; 0 when the lease is gone.
   * @throws {EtcdError} What etcd answered.
   */
  async leaseKeepAlive(id: string, signal?: AbortSignal): Promise<number> {
    const path = "/v3/lease/keepalive";
    const body = await this.call(path, { ID: id }, signal);
    // Only an answer about the lease may say it is gone.
    if (body?.result === undefined) {
      throw new EtcdError(`Cannot call etcd "${path}": no result`, 2);
    }
    return Number(body.result.TTL ?? 0);
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
    const body = await this.call("/v3/lease/timetolive", { ID: id }, signal);
    return {
      ttl: Number(body.TTL ?? 0),
      grantedTtl: Number(body.grantedTTL ?? 0),
    };
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
   * Forgets a token etcd refused as invalid (expired): the next request
   * authenticates again.
   *
   * @param token The refused token.
   */
  refused(token: string | undefined): void {
    if (token !== undefined) this.#tokens?.refused(token);
  }

  /**
   * POSTs one request to one endpoint with this client's TLS and `token`,
   * with no retry; the caller reads the answer.
   *
   * @param url The member's URL and the gateway path.
   * @param json The request's JSON text.
   * @param token The auth token, if any.
   * @param signal Abandons the request.
   * @returns The response.
   */
  post(
    url: string,
    json: string,
    token: string | undefined,
    signal: AbortSignal,
  ): Promise<Response> {
    return postJson(url, json, { token, http: this.#http, signal });
  }

  /**
   * POSTs one gateway request, trying endpoint after endpoint until one
   * answers or the retry budget is spent. Only "unavailable" answers and
   * transport failures move on; a refused (expired) auth token is renewed
   * once and the request repeated; any other etcd error is thrown at once.
   *
   * @param path The gateway path (`/v3/kv/put`).
   * @param body The request.
   * @param signal Abandons the call.
   * @returns The answer's JSON.
   * @throws {EtcdError} What etcd answered, typed.
   */
  async call(
    path: string,
    body: unknown,
    signal?: AbortSignal,
  ): Promise<GatewayJson> {
    return await this.#call(path, JSON.stringify(body), signal, this.#tokens);
  }

  /** Closes the HTTP client of the TLS setting. */
  [Symbol.dispose](): void {
    this.#http?.close();
  }

  async #call(
    path: string,
    json: string,
    signal: AbortSignal | undefined,
    tokens?: EtcdTokens,
  ): Promise<GatewayJson> {
    const until = performance.now() + this.#retryForMs;
    let last: unknown;
    let renewed = false;
    for (let tried = 0;; tried++) {
      signal?.throwIfAborted();
      const endpoint = this.endpoint;
      const token = await tokens?.get(signal);
      try {
        const [ok, status, answer] = await withTimeout(
          this.#timeoutMs,
          signal,
          async (bounded) => {
            const url = endpoint + path;
            const response = await this.post(url, json, token, bounded);
            return [
              response.ok,
              response.status,
              await readJson(response, bounded),
            ];
          },
        );
        // A streamed answer (keep-alive) reports its error in a 200.
        const failed = ok ? answer?.error : answer;
        if (failed === undefined) return answer;
        const error = etcdError(path, failed, status);
        if (error.code === UNAUTHENTICATED && token !== undefined && !renewed) {
          tokens!.refused(token);
          renewed = true;
          continue;
        }
        if (error.code !== UNAVAILABLE) throw error;
        last = error;
      } catch (error) {
        if (error instanceof EtcdError && error.code !== UNAVAILABLE) {
          throw error;
        }
        signal?.throwIfAborted();
        last = error;
      }
      this.rotate(endpoint);
      if (performance.now() >= until) {
        throw new EtcdUnavailableError(
          `Cannot call etcd "${path}": no endpoint answered within ${this.#retryForMs} ms: ${
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
