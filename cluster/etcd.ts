/**
 * A small etcd v3 client over etcd's JSON gateway with plain `fetch`: KV,
 * txn and leases, with endpoint failover, a timeout per request and etcd's
 * errors as typed errors (`etcd_errors.ts`). The JSON mapping lives in
 * `etcd_codec.ts`, the streamed watch in `etcd_watch.ts`.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import {
  EtcdError,
  etcdError,
  EtcdUnavailableError,
  UNAVAILABLE,
} from "./etcd_errors.ts";
import { LinkedAbort } from "./linked_abort.ts";
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
 * const etcd = new EtcdClient(["http://127.0.0.1:23791"]);
 * const { kvs } = await etcd.range({ key: "/pklock/v1/q/", prefix: true });
 * ```
 */
export class EtcdClient {
  readonly #endpoints: readonly string[];
  readonly #timeoutMs: number;
  readonly #retryForMs: number;
  #current = 0;

  /**
   * @param endpoints Client URLs of the members (`http://host:port`).
   * @param options Timeouts.
   * @throws {RangeError} When `endpoints` is empty.
   */
  constructor(endpoints: readonly string[], options: EtcdClientOptions = {}) {
    if (endpoints.length === 0) {
      throw new RangeError("Cannot use etcd: no endpoints");
    }
    this.#endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    this.#timeoutMs = options.timeoutMs ?? 1_000;
    this.#retryForMs = options.retryForMs ?? 5_000;
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
    const body = await this.call("/v3/lease/keepalive", { ID: id }, signal);
    return Number(body.result?.TTL ?? 0);
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
   * POSTs one gateway request, trying endpoint after endpoint until one
   * answers or the retry budget is spent. Only "unavailable" answers and
   * transport failures move on; any other etcd error is thrown at once.
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
    const until = performance.now() + this.#retryForMs;
    const json = JSON.stringify(body);
    let last: unknown;
    for (let tried = 0;; tried++) {
      signal?.throwIfAborted();
      const endpoint = this.endpoint;
      try {
        const [ok, status, answer] = await withTimeout(
          this.#timeoutMs,
          signal,
          async (bounded) => {
            const response = await fetch(endpoint + path, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: json,
              signal: bounded,
            });
            return [
              response.ok,
              response.status,
              await readJson(response, bounded),
            ];
          },
        );
        if (ok) return answer;
        const error = etcdError(path, answer, status);
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
          `Cannot call etcd "${path}": no endpoint answered within ${this.#retryForMs} ms`,
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

/**
 * Runs `run` with a signal that aborts after `ms`, or when `signal` does; the
 * timer is cleared as soon as `run` settles.
 *
 * @param ms The bound, in milliseconds.
 * @param signal Aborts earlier.
 * @param run What to bound.
 * @returns What `run` returns.
 */
export async function withTimeout<T>(
  ms: number,
  signal: AbortSignal | undefined,
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  using bounded = new LinkedAbort(signal);
  const timer = setTimeout(
    () =>
      bounded.abort(
        new DOMException(`Timed out after ${ms} ms`, "TimeoutError"),
      ),
    ms,
  );
  try {
    return await run(bounded.signal);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A response's JSON body, or an abort: the body is cancelled by hand, as
 * aborting the fetch's signal did not always end a pending body read here.
 */
async function readJson(
  response: Response,
  signal: AbortSignal,
): Promise<GatewayJson> {
  const cancel = () =>
    void response.body?.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", cancel, { once: true });
  try {
    const answer = await response.json();
    signal.throwIfAborted();
    return answer;
  } finally {
    signal.removeEventListener("abort", cancel);
  }
}
