/**
 * The lock client: one persistent connection to a pklock server, on which any
 * number of locks are requested, held and released.
 *
 * @module
 */

import type { MessageClient, RpcOptions } from "../message/client.ts";
import type { CloseInfo } from "../message/connection_types.ts";
import { RemoteError, RequestTimeoutError } from "../message/errors.ts";
import type {
  ForceReleaseResult,
  HelloResult,
  StatusResult,
} from "../protocol/lock_protocol.ts";
import { LockTimeoutError, RequestRefusedError } from "./errors.ts";
import { Farewell, type FarewellMessage } from "./farewell.ts";
import type { Lock } from "./lock.ts";
import { LockRequests } from "./lock_requests.ts";
import {
  checkLockArguments,
  type LockOptions,
  type ServerAddress,
} from "./options.ts";
import type { LockEvent } from "./request.ts";
import { readStatus, type StatusOptions } from "./status_report.ts";
import { Turns } from "./turns.ts";

/**
 * A connection to a pklock server, made by `connect()`. Every lock it
 * holds is released by the server when the connection closes, however that
 * happens.
 *
 * One connection holds a name at most once. Requests for the same name from
 * two places in the program take turns in this client, first come first
 * served, like two threads on one Curator `InterProcessMutex` (which is
 * re-entrant only within a thread, and a client has no threads): the second
 * is sent once the first is released or given up, and queues on the server
 * behind the other clients' requests. A program that waits for a name it
 * holds itself waits until its `wait` or `signal` ends it.
 *
 * @example Holding a lock
 * ```ts ignore
 * import { connect } from "./client.ts";
 * await using client = await connect();
 * await using lock = await client.lock("nightly-report", { wait: 10_000 });
 * console.log(`holding with token ${lock.token}`);
 * ```
 */
export class LockClient implements AsyncDisposable {
  /** What the server said about itself when the connection opened. */
  readonly server: HelloResult;
  /** The server this client connected to (the first of `servers` to answer). */
  readonly address: ServerAddress;
  readonly #messages: MessageClient;
  readonly #timeout: number;
  /** status() calls, one at a time: the server keeps one report a session. */
  readonly #statusTurns = new Turns();
  readonly #farewell = new Farewell();
  readonly #requests: LockRequests;

  /**
   * Made by `connect()`; not meant to be built directly.
   *
   * @param messages The open connection.
   * @param server The server's `hello` reply.
   * @param address Where the server is.
   * @param timeout How long to wait for a reply, in milliseconds.
   */
  constructor(
    messages: MessageClient,
    server: HelloResult,
    address: ServerAddress,
    timeout: number,
  ) {
    this.#messages = messages;
    this.server = server;
    this.address = address;
    this.#timeout = timeout;
    this.#requests = new LockRequests(messages, {
      timeout,
      rpc: (command, parameters) => this.#rpc(command, parameters),
      refused: (error) => this.#refused(error),
      farewell: this.#farewell,
    });
    messages.closed.then((info) => this.#onClose(info));
    messages.addEventListener("message", (event) => {
      const data = (event as MessageEvent<LockEvent | FarewellMessage>).data;
      if (!this.#farewell.heard(data as FarewellMessage)) {
        this.#requests.heard(data as LockEvent);
      }
    });
  }

  /** Aborted, with a {@linkcode ConnectionError}, when the connection closes. */
  get signal(): AbortSignal {
    return this.#messages.signal;
  }

  /** Resolves with the reason once the connection has closed. */
  get closed(): Promise<CloseInfo> {
    return this.#messages.closed;
  }

  /**
   * Asks for a lock and waits until it is granted. `wait` and `signal` end
   * the wait on the client's own clock, even if the server has stopped
   * answering; the request is then withdrawn in the background.
   *
   * @param name The lock's name.
   * @param options Mode, bounded wait and cancellation.
   * @returns The held lock.
   * @throws {TypeError} When an argument has the wrong type.
   * @throws {RangeError} When `name` is empty or `mode` or `wait` is out of
   *   range (`wait` must be an integer number of milliseconds).
   * @throws {LockTimeoutError} When `wait` passes first (or, with `wait: 0`,
   *   the lock is taken).
   * @throws {RequestRefusedError} When the server refuses the request, with
   *   its `code`: `deadlock`, `limit_exceeded`, `name_too_long`, ...;
   *   `unavailable` from a cluster node that cannot reach etcd now (the
   *   connection stays open: retry, or ask another node).
   * @throws {ConnectionError} When the connection closes first.
   *
   * @example Waiting at most ten seconds, or until Ctrl-C
   * ```ts ignore
   * const controller = new AbortController();
   * Deno.addSignalListener("SIGINT", () => controller.abort());
   * const lock = await client.lock("jobs", {
   *   wait: 10_000,
   *   signal: controller.signal,
   * });
   * ```
   */
  async lock(name: string, options: LockOptions = {}): Promise<Lock> {
    checkLockArguments(name, options);
    return await this.#requests.lock(name, options);
  }

  /**
   * Takes a lock only if it is free now.
   *
   * @param name The lock's name.
   * @param options The mode and limit.
   * @returns The held lock, or `null` when it is held (by another client, or
   *   by this one elsewhere in the program).
   * @throws {LockTimeoutError} When the server did not answer in time (its
   *   `cause` is a `RequestTimeoutError`): whether the lock was free is not
   *   known.
   * @throws {RequestRefusedError} When the server refuses the request.
   * @throws {ConnectionError} When the connection closes first.
   */
  async tryLock(
    name: string,
    options: Pick<LockOptions, "mode" | "limit"> = {},
  ): Promise<Lock | null> {
    try {
      return await this.lock(name, { ...options, wait: 0 });
    } catch (error) {
      // Busy, or held elsewhere in this program; not a silent server.
      if (
        error instanceof LockTimeoutError &&
        !(error.cause instanceof RequestTimeoutError)
      ) return null;
      throw error;
    }
  }

  /**
   * Takes a lock, runs `fn` while holding it, and releases it after, however
   * `fn` ends. `fn` gets the lock's `lost` signal: pass it on to what it
   * starts (`fetch`, child processes) so that work stops if the lock is lost.
   *
   * @param name The lock's name.
   * @param fn The work to do while holding the lock.
   * @param options As for {@linkcode LockClient.lock}; `signal` ends only
   *   the wait, not `fn`.
   * @returns What `fn` returned.
   * @throws {LockLostError} When the lock was lost while `fn` ran, even if
   *   `fn` itself succeeded: another client may have held it meanwhile.
   * @throws Whatever `fn` or {@linkcode LockClient.lock} throws.
   *
   * @example Running a job under a lock
   * ```ts ignore
   * const report = await client.withLock("nightly-report", async (lost) => {
   *   const response = await fetch("https://example.com/data", { signal: lost });
   *   return await response.text();
   * }, { wait: 30_000 });
   * ```
   */
  async withLock<T>(
    name: string,
    fn: (lost: AbortSignal, lock: Lock) => T | Promise<T>,
    options: LockOptions = {},
  ): Promise<T> {
    if (typeof fn !== "function") {
      throw new TypeError('"fn" must be a function');
    }
    const lock = await this.lock(name, options);
    let result: T;
    try {
      result = await fn(lock.lost, lock);
    } catch (error) {
      await lock.release().catch(() => {});
      throw error;
    }
    await lock.release();
    lock.lost.throwIfAborted();
    return result;
  }

  /**
   * Forces a lock free: the server closes the connection of every holder (so
   * their `lost` signals fire, with reason `forced_release`) and grants the
   * next waiter. For operators, when a holder's host has vanished; needs the
   * server's admin secret.
   *
   * @param name The lock's name.
   * @param adminSecret The server's admin secret.
   * @returns Whom the server disconnected, or `notFound`.
   * @throws {RequestRefusedError} `admin_disabled` when the server has no
   *   admin secret, `auth_failed` (and the connection closes) when it is
   *   wrong.
   * @throws {RequestTimeoutError} When the server does not answer in time.
   */
  async forceRelease(
    name: string,
    adminSecret: string,
  ): Promise<ForceReleaseResult> {
    checkLockArguments(name, {});
    return await this.#rpc<ForceReleaseResult>("forceRelease", {
      lockName: name,
      adminSecret,
    });
  }

  /**
   * Asks the server for the locks with their holders and waiters. The server
   * sends the report in pages of bounded size, which this method asks for one
   * after the other and joins, so no report is too large for the connection:
   * asking for status never costs a lock. The pages are not one snapshot:
   * a lock taken or released meanwhile may be listed or not. Calls made
   * while one is under way wait for it, in call order (the server keeps one
   * report per connection); the wait ends with `signal`, and each page of the
   * call before is bounded by the client's `timeout`.
   *
   * @param options Which locks (`pattern`: `*` any run of characters, `?`
   *   any one), how many at most (`limit`; the totals count every match),
   *   and a signal to stop waiting.
   * @returns The whole report, its locks sorted by name, with its `totals`.
   * @throws {RequestRefusedError} `invalid_parameters` for a bad pattern or
   *   limit.
   * @throws {ConnectionError} When the connection closes first.
   * @throws {RequestTimeoutError} When the server does not answer a page in
   *   time; the connection and its locks stay as they are.
   *
   * @example The locks of one family, and how many there are
   * ```ts ignore
   * const report = await client.status({ pattern: "jobs.*", limit: 20 });
   * console.log(`${report.locks.length} of ${report.totals?.locks}`);
   * ```
   */
  async status(options: StatusOptions = {}): Promise<StatusResult> {
    const rpc: RpcOptions = { timeout: this.#timeout };
    if (options.signal !== undefined) rpc.signal = options.signal;
    const endTurn = await this.#statusTurns.take("", undefined, options.signal);
    try {
      return await readStatus(async (parameters) => {
        try {
          return await this.#messages.rpc<StatusResult>(
            "status",
            parameters as Record<string, unknown>,
            rpc,
          );
        } catch (error) {
          throw this.#refused(error);
        }
      }, options);
    } finally {
      endTurn();
    }
  }

  /**
   * Makes a round trip to the server. Replies come in request order, so once
   * it resolves every request made before it has been handled, withdrawals
   * of abandoned waits included.
   *
   * @returns The round-trip time, in milliseconds.
   * @throws {ConnectionError} When the connection closes first.
   * @throws {RequestTimeoutError} When the server does not answer in time.
   */
  async ping(): Promise<number> {
    const start = performance.now();
    await this.#rpc("ping");
    return performance.now() - start;
  }

  /**
   * Closes the connection; the server releases every lock it held, and their
   * `lost` signals fire (reason `closed`).
   */
  close(): Promise<void> {
    return this.#messages.close();
  }

  /** Same as {@linkcode LockClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** A request answered within `timeout`, with the server's codes typed. */
  async #rpc<T>(
    command: string,
    parameters?: Record<string, unknown>,
  ): Promise<T> {
    try {
      return await this.#messages.rpc<T>(command, parameters, {
        timeout: this.#timeout,
      });
    } catch (error) {
      throw this.#refused(error);
    }
  }

  /** Gives a server's error reply its typed class; other errors pass. */
  #refused(error: unknown): unknown {
    if (!(error instanceof RemoteError)) return error;
    this.#farewell.refused(error.code);
    return new RequestRefusedError(error.code, error.message);
  }

  #onClose(info: CloseInfo): void {
    const cause = this.#messages.signal.reason;
    this.#requests.lose((name) => this.#farewell.lost(name, info, cause));
  }
}
