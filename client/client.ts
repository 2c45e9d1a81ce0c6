/**
 * The lock client: one persistent connection to a pklock server, on which any
 * number of locks are requested, held and released.
 *
 * @module
 */

import { MessageClient } from "../message/client.ts";
import type { CloseInfo } from "../message/connection.ts";
import { ConnectionError, ProtocolError } from "../message/errors.ts";
import type {
  ContentionEvent,
  ForcedReleaseEvent,
  ForceReleaseResult,
  HelloResult,
  HoldAlarmEvent,
  LockMode,
  LockParameters,
  LockResult,
  PositionEvent,
  ReleaseResult,
  StatusResult,
} from "../protocol/lock_protocol.ts";
import { DEFAULT_PORT } from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import { LockLostError, LockTimeoutError } from "./errors.ts";
import { Lock } from "./lock.ts";
import { readStatus, type StatusOptions } from "./status_report.ts";

export type { StatusOptions };

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The server's address.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The server's port.
   *
   * @default {20934}
   */
  port?: number;
  /**
   * Connect over TLS: `true` trusts the system's root certificates; `caCerts`
   * adds PEM certificates to trust.
   */
  tls?: boolean | { caCerts?: string[] };
  /** The shared secret, for a server that requires authentication. */
  secret?: string;
  /**
   * A label for this client (host, process, job), shown in the server's
   * status, logs and audit log. At most 256 characters.
   */
  label?: string;
  /** Abandons connecting. */
  signal?: AbortSignal;
}

/** Options of {@linkcode LockClient.lock}. */
export interface LockOptions {
  /**
   * `exclusive` (one holder) or `shared` (any number of shared holders).
   *
   * @default {"exclusive"}
   */
  mode?: LockMode;
  /**
   * How long to wait for the lock, in milliseconds; `0` takes it only if it is
   * free now. The server ends the wait, so no grant can arrive after it.
   * Absent: wait for as long as it takes.
   */
  wait?: number;
  /**
   * Stops waiting. The request is withdrawn on the server before the promise
   * rejects with the signal's reason, so no stale grant is left behind.
   */
  signal?: AbortSignal;
  /**
   * Called while the request waits: when it joins the queue, and whenever its
   * place changes (1 is next in line).
   */
  onPosition?: (position: number) => void;
  /**
   * Called while the lock is held, whenever the number of requests waiting
   * for it changes (including right after the grant, if some already wait):
   * a cue for a cooperative long holder to finish early. The lock handle
   * also dispatches these as `contention` events.
   */
  onContention?: (waiters: number) => void;
}

/** A request this client has under way or holds. */
interface Outstanding {
  options: LockOptions;
  lock?: Lock;
  controller?: AbortController;
  /** Whether the server said it is closing the connection by force. */
  forced?: boolean;
}

/** The unsolicited events the server sends about one lock. */
type LockEvent =
  | PositionEvent
  | ContentionEvent
  | HoldAlarmEvent
  | ForcedReleaseEvent;

/**
 * Connects to a pklock server.
 *
 * @param options Where the server is.
 * @returns A connected client.
 * @throws {ConnectionError} When the server cannot be reached.
 *
 * @example Connecting
 * ```ts ignore
 * import { connect } from "./client.ts";
 * await using client = await connect({ port: 20934 });
 * ```
 */
export async function connect(
  options: ConnectOptions = {},
): Promise<LockClient> {
  const { signal, tls, secret, label } = options;
  const messages = await MessageClient.connect({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? DEFAULT_PORT,
    ...(signal ? { signal } : {}),
    ...(tls ? { tls } : {}),
  });
  try {
    const hello = await messages.rpc<HelloResult>(
      "hello",
      {
        protocol: PROTOCOL_VERSION,
        ...(secret === undefined ? {} : { secret }),
        ...(label === undefined ? {} : { client: label }),
      },
      signal ? { signal } : {},
    );
    return new LockClient(messages, hello);
  } catch (error) {
    await messages.close();
    throw error;
  }
}

/**
 * A connection to a pklock server. Every lock it holds is released by the
 * server when the connection closes, however that happens.
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
  readonly #messages: MessageClient;
  /** What this client holds or has a request under way for, by name. */
  readonly #requests = new Map<string, Outstanding>();

  /**
   * Made by {@linkcode connect}; not meant to be built directly.
   *
   * @param messages The open connection.
   * @param server The server's `hello` reply.
   */
  constructor(messages: MessageClient, server: HelloResult) {
    this.#messages = messages;
    this.server = server;
    messages.signal.addEventListener("abort", () => {
      for (const [name, { controller, forced }] of this.#requests) {
        const why = forced
          ? "an operator forced its release"
          : (messages.signal.reason as Error).message;
        controller?.abort(
          new LockLostError(`Lost lock "${name}": ${why}`, {
            cause: messages.signal.reason,
          }),
        );
      }
      this.#requests.clear();
    }, { once: true });
    messages.addEventListener("message", (event) => {
      const data = (event as MessageEvent<LockEvent>).data;
      const outstanding = this.#requests.get(data.lockName);
      if (outstanding === undefined) return;
      const { options, lock } = outstanding;
      switch (data.event) {
        case "position":
          options.onPosition?.(data.position);
          break;
        case "contention":
          options.onContention?.(data.waiters);
          lock?.dispatchEvent(new CustomEvent("contention", { detail: data }));
          break;
        case "hold_alarm":
          lock?.dispatchEvent(new CustomEvent("alarm", { detail: data }));
          break;
        case "forced_release":
          outstanding.forced = true;
          break;
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
   * Asks for a lock and waits until it is granted.
   *
   * @param name The lock's name.
   * @param options Mode, bounded wait and cancellation.
   * @returns The held lock.
   * @throws {LockTimeoutError} When `wait` passes first (or, with `wait: 0`,
   *   the lock is taken).
   * @throws {RemoteError} When the server refuses the request, with its
   *   `code`: `already_held`, `already_waiting`, `deadlock`,
   *   `invalid_parameters`.
   * @throws {ConnectionError} When the connection closes first.
   */
  async lock(name: string, options: LockOptions = {}): Promise<Lock> {
    const { mode = "exclusive", wait, signal } = options;
    signal?.throwIfAborted();
    const parameters: LockParameters = { lockName: name };
    if (mode !== "exclusive") parameters.mode = mode;
    if (wait !== undefined) parameters.wait = wait;
    if (options.onPosition !== undefined) parameters.notify = true;
    if (options.onContention !== undefined) parameters.contention = true;
    const reply = this.#messages.rpc<LockResult>(
      "lock",
      parameters as unknown as Record<string, unknown>,
    );
    if (this.#requests.has(name)) {
      // The server refuses this request (already_held or already_waiting),
      // unless the other one ended first (an aborted wait, withdrawn just
      // before): then this one is granted and must be tracked like any other.
      // Either way it is not withdrawn on abort: by name, that would hit the
      // other request.
      const outstanding: Outstanding = { options };
      const lock = this.#settle(name, mode, wait, await reply, outstanding);
      this.#requests.set(name, outstanding);
      return lock;
    }
    const outstanding: Outstanding = { options };
    this.#requests.set(name, outstanding);
    let withdrawn: Promise<unknown> | undefined;
    const withdraw = () => {
      withdrawn = this.#messages.rpc("release", { lockName: name })
        .catch(() => {});
    };
    signal?.addEventListener("abort", withdraw, { once: true });
    let lock: Lock | undefined;
    try {
      const result = await reply;
      if (withdrawn !== undefined) {
        await withdrawn;
        throw signal!.reason;
      }
      lock = this.#settle(name, mode, wait, result, outstanding);
      return lock;
    } finally {
      signal?.removeEventListener("abort", withdraw);
      if (lock === undefined) this.#forget(name, outstanding);
    }
  }

  /**
   * Takes a lock only if it is free now.
   *
   * @param name The lock's name.
   * @param options The mode.
   * @returns The held lock, or `null` when another client holds it.
   * @throws {RemoteError} When the server refuses the request.
   * @throws {ConnectionError} When the connection closes first.
   */
  async tryLock(
    name: string,
    options: Pick<LockOptions, "mode"> = {},
  ): Promise<Lock | null> {
    try {
      return await this.lock(name, { ...options, wait: 0 });
    } catch (error) {
      if (error instanceof LockTimeoutError) return null;
      throw error;
    }
  }

  /**
   * Forces a lock free: the server closes the connection of every holder (so
   * their `lost` signals fire) and grants the next waiter. For operators, when
   * a holder's host has vanished; needs the server's admin secret.
   *
   * @param name The lock's name.
   * @param adminSecret The server's admin secret.
   * @returns Whom the server disconnected, or `notFound`.
   * @throws {RemoteError} `admin_disabled` when the server has no admin
   *   secret, `auth_failed` (and the connection closes) when it is wrong.
   */
  forceRelease(name: string, adminSecret: string): Promise<ForceReleaseResult> {
    return this.#messages.rpc<ForceReleaseResult>("forceRelease", {
      lockName: name,
      adminSecret,
    });
  }

  /**
   * Asks the server for the locks with their holders and waiters. The server
   * sends the report in pages of bounded size, which this method asks for one
   * after the other and joins, so no report is too large for the connection:
   * asking for status never costs a lock. The pages are not one snapshot:
   * a lock taken or released meanwhile may be listed or not.
   *
   * @param options Which locks (`pattern`: `*` any run of characters, `?`
   *   any one), how many at most (`limit`; the totals count every match),
   *   and a signal to stop waiting.
   * @returns The whole report, its locks sorted by name, with its `totals`.
   * @throws {RemoteError} `invalid_parameters` for a bad pattern or limit.
   * @throws {ConnectionError} When the connection closes first.
   *
   * @example The locks of one family, and how many there are
   * ```ts ignore
   * const report = await client.status({ pattern: "jobs.*", limit: 20 });
   * console.log(`${report.locks.length} of ${report.totals?.locks}`);
   * ```
   */
  status(options: StatusOptions = {}): Promise<StatusResult> {
    const rpc = options.signal === undefined ? {} : { signal: options.signal };
    return readStatus(
      (parameters) =>
        this.#messages.rpc<StatusResult>(
          "status",
          parameters as Record<string, unknown>,
          rpc,
        ),
      options,
    );
  }

  /**
   * Makes a round trip to the server. Replies come in request order, so once
   * it resolves every request made before it has been handled.
   *
   * @returns The round-trip time, in milliseconds.
   * @throws {ConnectionError} When the connection closes first.
   */
  async ping(): Promise<number> {
    const start = performance.now();
    await this.#messages.rpc("ping");
    return performance.now() - start;
  }

  /**
   * Closes the connection; the server releases every lock it held, and their
   * `lost` signals fire.
   */
  close(): Promise<void> {
    return this.#messages.close();
  }

  /** Same as {@linkcode LockClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #settle(
    name: string,
    mode: LockMode,
    wait: number | undefined,
    result: LockResult,
    outstanding: Outstanding,
  ): Lock {
    switch (result.status) {
      case "ok":
        return this.#hold(name, mode, result.token ?? 0, outstanding);
      case "busy":
        throw new LockTimeoutError(
          `Cannot acquire lock "${name}": it is held by another client`,
        );
      case "timeout":
        throw new LockTimeoutError(
          `Cannot acquire lock "${name}": timed out after ${wait} ms`,
        );
      default:
        throw new ProtocolError(
          `Unexpected reply to lock "${name}": status "${result.status}"`,
        );
    }
  }

  #hold(
    name: string,
    mode: LockMode,
    token: number,
    outstanding: Outstanding,
  ): Lock {
    const controller = new AbortController();
    const lock = new Lock(name, mode, token, controller.signal, () => {
      this.#forget(name, outstanding);
      return this.#releaseOnServer(name);
    });
    outstanding.lock = lock;
    outstanding.controller = controller;
    return lock;
  }

  /** Stops tracking a name, unless a newer request for it took its place. */
  #forget(name: string, outstanding: Outstanding): void {
    if (this.#requests.get(name) === outstanding) this.#requests.delete(name);
  }

  async #releaseOnServer(name: string): Promise<void> {
    try {
      await this.#messages.rpc<ReleaseResult>("release", { lockName: name });
    } catch (error) {
      // A closed connection has released the lock already.
      if (!(error instanceof ConnectionError)) throw error;
    }
  }
}
