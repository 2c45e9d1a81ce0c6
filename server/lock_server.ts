/**
 * The pklock lock server: the lock protocol's handlers on a
 * {@linkcode MessageServer}, feeding one shared {@linkcode LockTable}.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import type { Message } from "../protocol/frame.ts";
import {
  checkLockName,
  DEFAULT_MAX_LOCK_NAME_LENGTH,
  type HelloResult,
  type LockResult,
  type ParameterError,
  parseLockParameters,
  type PositionEvent,
  type ReleaseResult,
  type StatusRequest,
  type StatusResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import {
  type CloseInfo,
  type Connection,
  type Handler,
  MessageError,
  MessageServer,
} from "../message/server.ts";
import { LOOPBACK } from "../message/allow_list.ts";
import { type LockRequest, LockTable } from "./lock_table.ts";

const log = getLogger(["pklock", "server"]);

/** Options of {@linkcode LockServer}. */
export interface LockServerOptions {
  /**
   * The address to listen on.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The port to listen on; 0 picks a free one.
   *
   * @default {20934}
   */
  port?: number;
  /**
   * Peers allowed to connect: addresses or CIDR ranges.
   *
   * @default {["127.0.0.1", "::1"]}
   */
  allowed?: readonly string[];
  /**
   * The largest incoming frame payload, in bytes.
   *
   * @default {65536}
   */
  maxFrameBytes?: number;
  /**
   * The most bytes queued for a client that does not read.
   *
   * @default {4194304}
   */
  maxOutputBytes?: number;
  /**
   * The longest lock name, in characters.
   *
   * @default {256}
   */
  maxLockNameLength?: number;
  /**
   * The most locks one connection may hold or wait for at once.
   *
   * @default {Infinity}
   */
  maxLocksPerConnection?: number;
  /**
   * The most connections open at once.
   *
   * @default {Infinity}
   */
  maxConnections?: number;
  /**
   * The most connections open at once from one IP address.
   *
   * @default {Infinity}
   */
  maxConnectionsPerIp?: number;
  /** Serve TLS with this PEM certificate chain and key. */
  tls?: { cert: string; key: string };
  /** Application heartbeats (off by default); see {@linkcode MessageServerOptions}. */
  heartbeat?: { interval: number; timeout: number };
  /**
   * A shared secret every connection must give in `hello` before anything
   * else; compared in constant time, never logged.
   */
  secret?: string;
  /**
   * Issues fencing tokens; must strictly increase. The `serve` command passes
   * a {@linkcode TokenStore}, which keeps them increasing across restarts.
   *
   * @default {A counter starting at 1}
   */
  nextToken?: () => number;
}

/** The server's own data for a request: how to answer it, and its timer. */
interface Ticket {
  id: unknown;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** When asked for, then when granted (ms since the epoch). */
  since: number;
  /** Whether the waiter wants position events, and the last one sent. */
  notify: boolean;
  position: number;
}

type Request = LockRequest<Connection, Ticket>;

const PONG = { status: "ok" } as const;
const SHUTDOWN = {
  event: "shutdown",
  message: "The server is shutting down",
} as const;

/** The default TCP port. */
export const DEFAULT_PORT = 20934;

/**
 * A running lock server.
 *
 * @example Serving on a free port
 * ```ts ignore
 * await using server = new LockServer({ port: 0 });
 * console.log(server.addr.port);
 * ```
 */
export class LockServer implements AsyncDisposable {
  readonly #table: LockTable<Connection, Ticket>;
  readonly #server: MessageServer;
  readonly #maxNameLength: number;
  readonly #maxLocks: number;
  readonly #secret: string | undefined;
  readonly #authenticated = new WeakSet<Connection>();
  readonly #startedAt = Date.now();
  /** How many waiters of each lock want position events. */
  readonly #watched = new Map<string, number>();
  #connectionsTotal = 0;

  /**
   * Starts listening at once.
   *
   * @param options Address, allow-list and limits.
   * @throws {Deno.errors.AddrInUse} When the port is taken.
   */
  constructor(options: LockServerOptions = {}) {
    this.#maxNameLength = options.maxLockNameLength ??
      DEFAULT_MAX_LOCK_NAME_LENGTH;
    this.#maxLocks = options.maxLocksPerConnection ?? Infinity;
    this.#secret = options.secret;
    this.#table = new LockTable({
      onGrant: (request) => this.#granted(request),
      ...(options.nextToken ? { nextToken: options.nextToken } : {}),
    });
    const guard = (handler: Handler): Handler =>
      this.#secret === undefined ? handler : (message, connection) => {
        if (this.#authenticated.has(connection)) {
          return handler(message, connection);
        }
        this.#refuse(message, connection, "auth_required");
      };
    const { hostname = "127.0.0.1", port = DEFAULT_PORT, allowed = LOOPBACK } =
      options;
    this.#server = new MessageServer({
      hostname,
      port,
      allowed,
      ...pick(options, [
        "maxFrameBytes",
        "maxOutputBytes",
        "maxConnections",
        "maxConnectionsPerIp",
        "tls",
        "heartbeat",
      ]),
      handlers: {
        hello: (message, connection) => this.#hello(message, connection),
        ping: guard(() => PONG),
        status: guard(() => this.status()),
        lock: guard((message, connection) => this.#lock(message, connection)),
        release: guard((message, connection) =>
          this.#release(message, connection)
        ),
        unlock: guard((message, connection) =>
          this.#unlock(message, connection)
        ),
      },
      onOpen: (connection) => {
        this.#connectionsTotal++;
        log.debug("Connection {id} opened from {peer}", {
          id: connection.id,
          peer: peer(connection.remoteAddr),
        });
      },
      onClose: (connection, info) => this.#disconnected(connection, info),
      onReject: (addr, reason) => {
        if (reason === "not_allowed") {
          log.warn("Refused connection from {peer}: not in the allow-list", {
            peer: peer(addr),
          });
        } else {
          log.warn("Refused connection from {peer}: {reason}", {
            peer: peer(addr),
            reason,
          });
        }
      },
      onError: (error, message, connection) =>
        log.error(
          "Handler failed for {command} from connection {id}: {error}",
          {
            command: message.command,
            id: connection.id,
            error,
          },
        ),
    });
  }

  /** The bound address. */
  get addr(): Deno.NetAddr {
    return this.#server.addr;
  }

  /**
   * Stops accepting and closes every connection; their locks are released.
   */
  close(): Promise<void> {
    return this.#server.close({ farewell: SHUTDOWN });
  }

  /** Same as {@linkcode LockServer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Every lock with its holders and waiters, and the server's counters.
   *
   * @returns What the `status` request answers.
   */
  status(): StatusResult {
    const locks = [...this.#table.names()].sort().map((name) => {
      const state = this.#table.inspect(name)!;
      return {
        name,
        mode: state.mode,
        holders: state.holders.map(describe),
        waiters: state.waiters.map(describe),
      };
    });
    const now = Date.now();
    return {
      status: "ok",
      server: {
        version: VERSION,
        protocol: PROTOCOL_VERSION,
        startedAt: new Date(this.#startedAt).toISOString(),
        uptime: (now - this.#startedAt) / 1000,
      },
      connections: {
        current: this.#server.connections.size,
        total: this.#connectionsTotal,
      },
      locks,
    };
  }

  #hello(message: Message, connection: Connection): HelloResult | undefined {
    if (this.#secret !== undefined && !this.#authenticated.has(connection)) {
      const parameters = message.parameters as Record<string, unknown> | null;
      const given = typeof parameters === "object" && parameters !== null
        ? parameters.secret
        : undefined;
      if (given === undefined) {
        this.#refuse(message, connection, "auth_required");
        return undefined;
      }
      if (typeof given !== "string" || !sameSecret(given, this.#secret)) {
        this.#refuse(message, connection, "auth_failed");
        return undefined;
      }
      this.#authenticated.add(connection);
    }
    return {
      status: "ok",
      server: "pklock",
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      connectionId: connection.id,
    };
  }

  #lock(message: Message, connection: Connection): LockResult | undefined {
    const id = message.id;
    const parameters = parseLockParameters(
      message.parameters,
      this.#maxNameLength,
    );
    if ("code" in parameters || id === undefined) {
      const error = id === undefined
        ? {
          code: "invalid_parameters",
          message: '"lock" is a request and needs an "id"',
        }
        : parameters as ParameterError;
      connection.send(
        id === undefined
          ? { command: "lock", result: { status: "invalid" }, error }
          : { id, result: { status: "invalid" }, error },
      );
      return undefined;
    }
    const { lockName, mode = "exclusive", wait, notify = false } = parameters;
    if (this.#table.countOf(connection) >= this.#maxLocks) {
      throw new MessageError(
        "limit_exceeded",
        `This connection already holds or waits for ${this.#maxLocks} locks, the limit`,
      );
    }
    const ticket: Ticket = {
      id,
      timer: undefined,
      since: Date.now(),
      notify,
      position: 0,
    };
    const request = this.#table.acquire(
      connection,
      lockName,
      mode,
      ticket,
      wait !== 0,
    );
    if (typeof request === "string") {
      if (request === "busy") return { status: "busy" };
      throw new MessageError(request, refusal(request, lockName));
    }
    if (request.held) {
      log.debug("Granted {name} to connection {id}", {
        name: lockName,
        id: connection.id,
      });
      return { status: "ok", token: request.token };
    }
    log.debug("Connection {id} waits for {name}", {
      id: connection.id,
      name: lockName,
    });
    if (wait !== undefined) {
      ticket.timer = setTimeout(() => this.#expire(request), wait);
    }
    if (notify) {
      this.#watched.set(lockName, (this.#watched.get(lockName) ?? 0) + 1);
      this.#announce(lockName);
    }
    return undefined;
  }

  #release(message: Message, connection: Connection): ReleaseResult {
    const parameters = message.parameters as Record<string, unknown> | null;
    const name = typeof parameters === "object" && parameters !== null
      ? parameters.lockName
      : undefined;
    const error = checkLockName(name, this.#maxNameLength);
    if (error !== null) throw new MessageError(error.code, error.message);
    return { status: this.#remove(connection, name as string) };
  }

  #unlock(message: Message, connection: Connection): undefined {
    const name = message.lockName;
    if (checkLockName(name, this.#maxNameLength) !== null) {
      connection.send({ attempted: "unlock", result: "invalid" });
      return;
    }
    const result = this.#remove(connection, name as string);
    connection.send({ attempted: "unlock", result, lockName: name });
  }

  /** Releases a hold or withdraws a waiting request (answering it). */
  #remove(connection: Connection, name: string): "ok" | "notFound" {
    const request = this.#table.release(connection, name);
    if (request === null) return "notFound";
    clearTimeout(request.ticket.timer);
    if (request.held) {
      log.debug("Connection {id} released {name}", { id: connection.id, name });
    } else {
      connection.send({
        id: request.ticket.id,
        result: { status: "cancelled" },
      });
    }
    return "ok";
  }

  #expire(request: Request): void {
    if (this.#table.withdraw(request)) {
      this.#left(request);
      request.owner.send({
        id: request.ticket.id,
        result: { status: "timeout" },
      });
      this.#announce(request.name);
    }
  }

  #granted(request: Request): void {
    this.#left(request);
    request.ticket.since = Date.now();
    log.debug("Granted {name} to waiting connection {id}", {
      name: request.name,
      id: request.owner.id,
    });
    request.owner.send({
      id: request.ticket.id,
      result: { status: "ok", token: request.token },
    });
  }

  /** A request stopped waiting: granted, withdrawn, timed out or dropped. */
  #left(request: Request): void {
    const ticket = request.ticket;
    clearTimeout(ticket.timer);
    if (ticket.notify) {
      ticket.notify = false;
      const watchers = this.#watched.get(request.name)! - 1;
      if (watchers === 0) this.#watched.delete(request.name);
      else this.#watched.set(request.name, watchers);
    }
  }

  /** Tells the waiters of a lock who asked for it where they now stand. */
  #announce(name: string): void {
    if (!this.#watched.has(name)) return;
    const waiters = this.#table.inspect(name)?.waiters ?? [];
    waiters.forEach((request, index) => {
      const ticket = request.ticket;
      if (!ticket.notify || ticket.position === index + 1) return;
      ticket.position = index + 1;
      const event: PositionEvent = {
        event: "position",
        lockName: name,
        position: ticket.position,
      };
      request.owner.send(event);
    });
  }

  /** Answers with an authentication error and closes the connection. */
  #refuse(
    message: Message,
    connection: Connection,
    code: "auth_required" | "auth_failed",
  ): void {
    const text = code === "auth_required"
      ? 'This server requires authentication: send "hello" with the secret first'
      : "Authentication failed";
    const error = { code, message: text };
    connection.closeWith(
      message.id === undefined
        ? { command: message.command, error }
        : { id: message.id, error },
      { reason: "refused" },
    );
    log.warn("Connection {id} from {peer} refused: {code}", {
      id: connection.id,
      peer: peer(connection.remoteAddr),
      code,
    });
  }

  #disconnected(connection: Connection, info: CloseInfo): void {
    log.debug("Connection {id} closed: {reason}", {
      id: connection.id,
      reason: info.reason,
    });
    for (const request of this.#table.releaseAll(connection)) {
      this.#left(request);
      this.#announce(request.name);
      if (request.held) {
        log.info(
          "Released {name} (token {token}) held by connection {id} from {peer}: connection {reason}",
          {
            name: request.name,
            token: request.token,
            id: connection.id,
            peer: peer(connection.remoteAddr),
            reason: info.reason,
          },
        );
      }
    }
  }
}

/** Compares two secrets in time that depends only on their digests' length. */
function sameSecret(given: string, secret: string): boolean {
  const digest = (text: string) => createHash("sha256").update(text).digest();
  return timingSafeEqual(digest(given), digest(secret));
}

/** Copies the options that are set, leaving absent ones absent. */
function pick<T extends object, K extends keyof T>(
  options: T,
  keys: readonly K[],
): Partial<Pick<T, K>> {
  const picked: Partial<Pick<T, K>> = {};
  for (const key of keys) {
    if (options[key] !== undefined) picked[key] = options[key];
  }
  return picked;
}

/** The message of a refusal, by its code. */
function refusal(
  code: "already_held" | "already_waiting" | "deadlock",
  name: string,
): string {
  switch (code) {
    case "already_held":
      return `This connection already holds lock "${name}"`;
    case "already_waiting":
      return `This connection already waits for lock "${name}"`;
    case "deadlock":
      return `Waiting for lock "${name}" would deadlock: its holders wait, directly or not, for a lock this connection holds`;
  }
}

function describe(request: Request): StatusRequest {
  const described: StatusRequest = {
    connectionId: request.owner.id,
    peer: peer(request.owner.remoteAddr),
    mode: request.mode,
    since: new Date(request.ticket.since).toISOString(),
  };
  if (request.held) described.token = request.token;
  return described;
}

function peer(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
