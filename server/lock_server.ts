/**
 * The pklock lock server: the lock protocol's handlers on a
 * {@linkcode MessageServer}, feeding one shared {@linkcode LockTable}.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Message } from "../protocol/frame.ts";
import {
  checkLockName,
  DEFAULT_MAX_LOCK_NAME_LENGTH,
  type HelloResult,
  type LockResult,
  parseLockParameters,
  type ReleaseResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import {
  type CloseInfo,
  type Connection,
  MessageError,
  MessageServer,
} from "../message/server.ts";
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
}

/** The server's own data for a request: how to answer it, and its timer. */
interface Ticket {
  id: unknown;
  timer: ReturnType<typeof setTimeout> | undefined;
}

type Request = LockRequest<Connection, Ticket>;

const PONG = { status: "ok" } as const;

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

  /**
   * Starts listening at once.
   *
   * @param options Address, allow-list and limits.
   * @throws {Deno.errors.AddrInUse} When the port is taken.
   */
  constructor(options: LockServerOptions = {}) {
    this.#maxNameLength = options.maxLockNameLength ??
      DEFAULT_MAX_LOCK_NAME_LENGTH;
    this.#table = new LockTable({
      onGrant: (request) => this.#granted(request),
    });
    this.#server = new MessageServer({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? DEFAULT_PORT,
      allowed: options.allowed ?? ["127.0.0.1", "::1"],
      ...(options.maxFrameBytes === undefined
        ? {}
        : { maxFrameBytes: options.maxFrameBytes }),
      ...(options.maxOutputBytes === undefined
        ? {}
        : { maxOutputBytes: options.maxOutputBytes }),
      handlers: {
        hello: (_message, connection) => this.#hello(connection),
        ping: () => PONG,
        lock: (message, connection) => this.#lock(message, connection),
        release: (message, connection) => this.#release(message, connection),
        unlock: (message, connection) => this.#unlock(message, connection),
      },
      onOpen: (connection) =>
        log.debug("Connection {id} opened from {peer}", {
          id: connection.id,
          peer: peer(connection.remoteAddr),
        }),
      onClose: (connection, info) => this.#disconnected(connection, info),
      onReject: (addr) =>
        log.warn("Refused connection from {peer}: not in the allow-list", {
          peer: peer(addr),
        }),
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
    return this.#server.close();
  }

  /** Same as {@linkcode LockServer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #hello(connection: Connection): HelloResult {
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
    if (typeof parameters === "string" || id === undefined) {
      const text = id === undefined
        ? '"lock" is a request and needs an "id"'
        : parameters as string;
      connection.send({
        id,
        result: { status: "invalid" },
        error: { code: "invalid_parameters", message: text },
      });
      return undefined;
    }
    const { lockName, mode = "exclusive", wait } = parameters;
    const ticket: Ticket = { id, timer: undefined };
    const request = this.#table.acquire(
      connection,
      lockName,
      mode,
      ticket,
      wait !== 0,
    );
    if (request === "busy") return { status: "busy" };
    if (request === "already_held" || request === "already_waiting") {
      const verb = request === "already_held" ? "holds" : "waits for";
      throw new MessageError(
        request,
        `This connection already ${verb} lock "${lockName}"`,
      );
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
    return undefined;
  }

  #release(message: Message, connection: Connection): ReleaseResult {
    const parameters = message.parameters as Record<string, unknown> | null;
    const name = typeof parameters === "object" && parameters !== null
      ? parameters.lockName
      : undefined;
    const error = checkLockName(name, this.#maxNameLength);
    if (error !== null) throw new MessageError("invalid_parameters", error);
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
      request.owner.send({
        id: request.ticket.id,
        result: { status: "timeout" },
      });
    }
  }

  #granted(request: Request): void {
    clearTimeout(request.ticket.timer);
    log.debug("Granted {name} to waiting connection {id}", {
      name: request.name,
      id: request.owner.id,
    });
    request.owner.send({
      id: request.ticket.id,
      result: { status: "ok", token: request.token },
    });
  }

  #disconnected(connection: Connection, info: CloseInfo): void {
    log.debug("Connection {id} closed: {reason}", {
      id: connection.id,
      reason: info.reason,
    });
    for (const request of this.#table.releaseAll(connection)) {
      clearTimeout(request.ticket.timer);
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

function peer(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
