/**
 * The lock requests of one client, in flight and held: each name's turn, its
 * `lock` request sent and given up on the client's own clock, the held
 * {@linkcode Lock} and its release, the server's events about it, and the
 * `lost` signals once the connection ends. The I/O of what request.ts
 * describes.
 *
 * @module
 */

import type { MessageClient } from "../message/client.ts";
import { ConnectionError, RequestTimeoutError } from "../message/errors.ts";
import {
  type LockMode,
  type LockResult,
  MAX_WAIT_MS,
  type ReleaseResult,
} from "../protocol/lock_protocol.ts";
import { LockTimeoutError } from "./errors.ts";
import { Lock } from "./lock.ts";
import { LOCK_REPLY_GRACE_MS, type LockOptions } from "./options.ts";
import {
  type Active,
  deliver,
  grantedToken,
  type LockEvent,
  lockParameters,
  modeOf,
} from "./request.ts";
import { Turns } from "./turns.ts";

/** What {@linkcode LockRequests} needs of its client. */
export interface LockRequestsOptions {
  /** How long to wait for a reply, in milliseconds. */
  timeout: number;
  /** A request answered within `timeout`, with the server's codes typed. */
  rpc<T>(command: string, parameters?: Record<string, unknown>): Promise<T>;
  /** Gives a server's error reply its typed class; other errors pass. */
  refused(error: unknown): unknown;
}

/**
 * A client's requests by name, one at a time per name.
 *
 * @example Taking a lock
 * ```ts ignore
 * const requests = new LockRequests(messages, { timeout, rpc, refused });
 * const lock = await requests.lock("jobs", { wait: 1000 });
 * ```
 */
export class LockRequests {
  readonly #messages: MessageClient;
  readonly #timeout: number;
  readonly #rpc: LockRequestsOptions["rpc"];
  readonly #refused: LockRequestsOptions["refused"];
  readonly #turns = new Turns();
  readonly #active = new Map<string, Active>();

  /**
   * @param messages The open connection.
   * @param options The client's timeout and its typed round trips.
   */
  constructor(messages: MessageClient, options: LockRequestsOptions) {
    this.#messages = messages;
    this.#timeout = options.timeout;
    this.#rpc = options.rpc;
    this.#refused = options.refused;
  }

  /**
   * Waits for the name's turn, then asks for the lock and waits until it is
   * granted; as `LockClient.lock`, whose arguments are already checked.
   *
   * @param name The lock's name.
   * @param options Mode, bounded wait and cancellation.
   * @returns The held lock.
   */
  async lock(name: string, options: LockOptions): Promise<Lock> {
    const { wait, signal } = options;
    signal?.throwIfAborted();
    const started = performance.now();
    const endTurn = await this.#turns.take(name, wait, signal);
    const active: Active = {
      options,
      endTurn: () => {
        if (this.#active.get(name) === active) this.#active.delete(name);
        endTurn();
      },
    };
    try {
      const left = wait === undefined
        ? undefined
        : Math.max(0, Math.floor(wait - (performance.now() - started)));
      return await this.#request(name, left, active);
    } catch (error) {
      active.endTurn();
      throw error;
    }
  }

  /**
   * Hands a server's event to the request for its lock, if there is one.
   *
   * @param event The event.
   */
  heard(event: LockEvent): void {
    const active = this.#active.get(event.lockName);
    if (active !== undefined) deliver(active, event);
  }

  /**
   * Ends every request once the connection has closed: held locks are lost.
   *
   * @param reason The reason each lock's `lost` signal gets, by name.
   */
  lose(reason: (name: string) => unknown): void {
    for (const [name, active] of [...this.#active]) {
      active.lost?.abort(reason(name));
      active.endTurn();
    }
  }

  /** Sends the request and waits for its outcome, on the client's clock. */
  async #request(
    name: string,
    left: number | undefined,
    active: Active,
  ): Promise<Lock> {
    const { options } = active;
    const { wait, signal } = options;
    const mode = modeOf(options);
    this.#active.set(name, active);
    let result: LockResult;
    try {
      result = await this.#messages.rpc<LockResult>(
        "lock",
        lockParameters(name, left, options) as unknown as Record<
          string,
          unknown
        >,
        {
          ...(signal ? { signal } : {}),
          ...(left === undefined ? {} : {
            timeout: Math.min(
              MAX_WAIT_MS,
              left + Math.min(this.#timeout, LOCK_REPLY_GRACE_MS),
            ),
          }),
        },
      );
    } catch (error) {
      const timedOut = error instanceof RequestTimeoutError;
      if (!timedOut && !(signal?.aborted && error === signal.reason)) {
        throw this.#refused(error);
      }
      // Given up on the client's clock. The release goes out behind the
      // lock, so it withdraws the request or releases a grant that comes
      // late; the next request for the name goes out behind both.
      this.#messages.rpc("release", { lockName: name }, {
        timeout: this.#timeout,
      }).catch(() => {});
      if (!timedOut) throw error;
      throw new LockTimeoutError(
        `Cannot acquire lock "${name}": timed out after ${wait} ms (the server did not answer)`,
        { cause: error },
      );
    }
    return this.#hold(name, mode, grantedToken(name, wait, result), active);
  }

  #hold(name: string, mode: LockMode, token: number, active: Active): Lock {
    const lost = new AbortController();
    const lock = new Lock(
      name,
      mode,
      token,
      lost.signal,
      () => this.#release(name, active),
    );
    active.lock = lock;
    active.lost = lost;
    return lock;
  }

  async #release(name: string, active: Active): Promise<void> {
    const reply = this.#rpc<ReleaseResult>("release", { lockName: name });
    // The release is on its way: the next request for the name goes out
    // behind it, and the lock's lost signal no longer applies.
    active.endTurn();
    try {
      await reply;
    } catch (error) {
      // A closed connection has released the lock already.
      if (!(error instanceof ConnectionError)) throw error;
    }
  }
}
