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
  HelloResult,
  LockMode,
  LockParameters,
  LockResult,
  PositionEvent,
  ReleaseResult,
  StatusResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import { LockLostError, LockTimeoutError } from "./errors.ts";
import { Lock } from "./lock.ts";

/** The port a pklock server listens on unless told otherwise. */
export const DEFAULT_PORT = 20934;

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
}

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
  const { signal, tls, secret } = options;
  const messages = await MessageClient.connect({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? DEFAULT_PORT,
    ...(signal ? { signal } : {}),
    ...(tls ? { tls } : {}),
  });
  try {
    const hello = await messages.rpc<HelloResult>(
      "hello",
      secret === undefined
        ? { protocol: PROTOCOL_VERSION }
        : { protocol: PROTOCOL_VERSION, secret },
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
  readonly #held = new Map<Lock, AbortController>();
  /** Names this client holds or has a request under way for. */
  readonly #names = new Set<string>();
  readonly #positions = new Map<string, (position: number) => void>();

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
      for (const [lock, controller] of this.#held) {
        controller.abort(
          new LockLostError(
            `Lost lock "${lock.name}": ${
              (messages.signal.reason as Error).message
            }`,
            { cause: messages.signal.reason },
          ),
        );
      }
      this.#held.clear();
      this.#names.clear();
    }, { once: true });
    messages.addEventListener("message", (event) => {
      const data = (event as MessageEvent<PositionEvent>).data;
      if (data.event === "position") {
        this.#positions.get(data.lockName)?.(data.position);
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
    const { mode = "exclusive", wait, signal, onPosition } = options;
    signal?.throwIfAborted();
    const parameters: LockParameters = { lockName: name };
    if (mode !== "exclusive") parameters.mode = mode;
    if (wait !== undefined) parameters.wait = wait;
    if (onPosition !== undefined) parameters.notify = true;
    const reply = this.#messages.rpc<LockResult>(
      "lock",
      parameters as unknown as Record<string, unknown>,
    );
    if (this.#names.has(name)) {
      // The server refuses this request (already_held or already_waiting).
      // Withdrawing it by name on abort would hit the other request instead.
      return this.#settle(name, mode, wait, await reply);
    }
    this.#names.add(name);
    if (onPosition !== undefined) this.#positions.set(name, onPosition);
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
      lock = this.#settle(name, mode, wait, result);
      return lock;
    } finally {
      signal?.removeEventListener("abort", withdraw);
      this.#positions.delete(name);
      if (lock === undefined) this.#names.delete(name);
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
   * Asks the server for every lock with its holders and waiters.
   *
   * @returns The server's status report.
   * @throws {ConnectionError} When the connection closes first.
   */
  status(): Promise<StatusResult> {
    return this.#messages.rpc<StatusResult>("status");
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
  ): Lock {
    switch (result.status) {
      case "ok":
        return this.#hold(name, mode, result.token ?? 0);
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

  #hold(name: string, mode: LockMode, token: number): Lock {
    const controller = new AbortController();
    const lock: Lock = new Lock(name, mode, token, controller.signal, () => {
      this.#held.delete(lock);
      this.#names.delete(name);
      return this.#releaseOnServer(name);
    });
    this.#held.set(lock, controller);
    return lock;
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
