/**
 * One etcd lease per pklock node, kept alive every TTL/3, with the node's own
 * deadline: the *send* time of the last answered keep-alive plus the TTL etcd
 * returned, minus a margin. The lease lives on etcd's leader at least until
 * that send time plus the TTL (the renewal arrived after it was sent, and the
 * TTL runs on the leader's clock), so firing `lost` at the deadline tells the
 * node's clients before any other node can be granted their locks, as long as
 * clock rates agree and this process runs on time (docs: the assumptions).
 *
 * Time is the larger of monotonic and wall-clock time elapsed since the lease
 * was asked for: Linux's monotonic clock stops while a VM is suspended, and a
 * suspended node must not believe less time has passed than has.
 *
 * @module
 */

import { PklockError } from "../protocol/errors.ts";
import { delay } from "../message/io.ts";
import type { EtcdClient } from "./etcd.ts";
import { withTimeout } from "./etcd_grpc.ts";

/** Options of {@linkcode NodeLease.grant}. */
export interface NodeLeaseOptions {
  /**
   * The TTL to ask for, in seconds; etcd may grant more (its minimum is
   * about 1.5 × its election timeout), and the returned TTL is the one used.
   *
   * @default {10}
   */
  ttlSeconds?: number | undefined;
  /**
   * How long before the lease could expire `lost` fires, in milliseconds: the
   * slack for the timer, the close reaching clients, and clock-rate error.
   * Must be below half the TTL.
   *
   * @default {1000}
   */
  marginMs?: number | undefined;
}

/** The node can no longer be sure its lease lives: its locks count as lost. */
export class NodeLeaseLostError extends PklockError {
  /** Always `"NodeLeaseLostError"`. */
  override name = "NodeLeaseLostError";
}

/** How often the deadline is checked, in milliseconds. */
const CHECK_EVERY_MS = 50;
/** The pause before retrying a keep-alive that failed, in milliseconds. */
const RETRY_AFTER_MS = 100;

/**
 * The clock of a lease: milliseconds elapsed since it was made, the larger of
 * the monotonic and the wall-clock reading.
 *
 * @returns The clock.
 */
export function elapsedClock(): () => number {
  const monotonic = performance.now();
  const wall = Date.now();
  return () => Math.max(performance.now() - monotonic, Date.now() - wall);
}

/**
 * A node's etcd lease and the deadline by which the node must stop trusting
 * it.
 *
 * @example Closing every client connection when the lease may be gone
 * ```ts ignore
 * await using lease = await NodeLease.grant(etcd, { ttlSeconds: 10 });
 * lease.lost.addEventListener("abort", () => server.closeAll(lease.lost.reason));
 * ```
 */
export class NodeLease implements AsyncDisposable {
  /** The lease id, as etcd spells it (decimal). */
  readonly id: string;
  /** The TTL etcd granted, in seconds. */
  readonly ttl: number;
  readonly #etcd: EtcdClient;
  readonly #now: () => number;
  readonly #marginMs: number;
  readonly #lost = new AbortController();
  readonly #check: ReturnType<typeof setInterval>;
  readonly #keeping: Promise<void>;
  #aliveUntil: number;
  #renewed = Promise.withResolvers<number>();

  private constructor(
    etcd: EtcdClient,
    lease: { id: string; ttl: number; sent: number },
    now: () => number,
    marginMs: number,
  ) {
    this.#etcd = etcd;
    this.id = lease.id;
    this.ttl = lease.ttl;
    this.#now = now;
    this.#marginMs = marginMs;
    this.#aliveUntil = lease.sent + lease.ttl * 1000;
    this.#check = setInterval(() => this.#checkDeadline(), CHECK_EVERY_MS);
    this.#keeping = this.#keepAlive();
  }

  /**
   * Asks etcd for a lease and starts keeping it alive.
   *
   * @param etcd The etcd client.
   * @param options The TTL and margin.
   * @returns The lease.
   * @throws {RangeError} When the margin is not below half the TTL.
   * @throws {EtcdError} When etcd does not grant it.
   */
  static async grant(
    etcd: EtcdClient,
    options: NodeLeaseOptions = {},
  ): Promise<NodeLease> {
    const ttlSeconds = options.ttlSeconds ?? 10;
    const marginMs = options.marginMs ?? 1_000;
    if (!(marginMs >= 0 && marginMs < ttlSeconds * 500)) {
      throw new RangeError(
        `Cannot keep a node lease: margin ${marginMs} ms is not below half the TTL of ${ttlSeconds} s`,
      );
    }
    const now = elapsedClock();
    const sent = now();
    const lease = await etcd.leaseGrant(ttlSeconds);
    return new NodeLease(etcd, { ...lease, sent }, now, marginMs);
  }

  /** Aborts, with a {@linkcode NodeLeaseLostError}, when the lease may be gone. */
  get lost(): AbortSignal {
    return this.#lost.signal;
  }

  /**
   * When `lost` fires unless a keep-alive is answered first, on
   * {@linkcode NodeLease.now}'s clock.
   */
  get deadline(): number {
    return this.#aliveUntil - this.#marginMs;
  }

  /**
   * Waits for the next answered keep-alive.
   *
   * @returns The deadline it set.
   */
  renewed(): Promise<number> {
    return this.#renewed.promise;
  }

  /**
   * The lease's clock.
   *
   * @returns Milliseconds since the lease was asked for.
   */
  now(): number {
    return this.#now();
  }

  /**
   * Gives the lease up: stops the keep-alives, fires `lost`, and revokes it,
   * which deletes every key attached to it at once.
   *
   * @throws {EtcdError} When etcd cannot be told; the lease then expires.
   */
  async revoke(): Promise<void> {
    const wasLost = this.#lost.signal.aborted;
    this.#lose(`Node lease ${this.id} revoked`);
    await this.#keeping;
    if (!wasLost) await this.#etcd.leaseRevoke(this.id);
  }

  /** Revokes the lease, leaving it to expire when etcd cannot be told. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.revoke().catch(() => {});
  }

  async #keepAlive(): Promise<void> {
    const stop = this.#lost.signal;
    const every = (this.ttl * 1000) / 3;
    let pause = every;
    while (!(await delay(pause, stop))) {
      const sent = this.#now();
      try {
        const ttl = await withTimeout(
          every,
          stop,
          (signal) => this.#etcd.leaseKeepAlive(this.id, signal),
        );
        if (ttl <= 0) {
          this.#lose(`Node lease ${this.id} lost: etcd says it has expired`);
          return;
        }
        this.#aliveUntil = Math.max(this.#aliveUntil, sent + ttl * 1000);
        this.#renewed.resolve(this.deadline);
        this.#renewed = Promise.withResolvers();
        pause = every;
      } catch {
        pause = RETRY_AFTER_MS;
      }
    }
  }

  #checkDeadline(): void {
    const left = this.#aliveUntil - this.#now();
    if (left <= this.#marginMs) {
      this.#lose(
        `Node lease ${this.id} lost: cannot confirm it with etcd; it may expire in ${
          Math.round(left)
        } ms`,
      );
    }
  }

  #lose(message: string): void {
    if (this.#lost.signal.aborted) return;
    clearInterval(this.#check);
    this.#lost.abort(new NodeLeaseLostError(message));
  }
}
