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
  type ContentionEvent,
  DEFAULT_MAX_LOCK_NAME_LENGTH,
  DEFAULT_PORT,
  type ForcedReleaseEvent,
  type ForceReleaseResult,
  type HelloResult,
  type HoldAlarmEvent,
  type LockMode,
  type LockResult,
  type ParameterError,
  parseLockParameters,
  type PositionEvent,
  type ReleaseResult,
  type StatusEntry,
  type StatusResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import {
  type CloseInfo,
  type Connection,
  MessageError,
  MessageServer,
} from "../message/server.ts";
import { LOOPBACK } from "../message/allow_list.ts";
import { FrameError } from "../protocol/errors.ts";
import type { AuditEntry, AuditEvent, AuditLog } from "./audit.ts";
import { globToRegExp } from "./glob.ts";
import { type LockRequest, LockTable } from "./lock_table.ts";
import { Metrics, type ReleaseCause } from "./metrics.ts";

const log = getLogger(["pklock", "server"]);

/** Whether debug lines are wanted: checked first so that, when they are not,
 * the hot path does not even build their properties. */
function debugging(): boolean {
  return log.isEnabledFor("debug");
}

/** Hold-time alarm thresholds, in milliseconds. */
export interface HoldAlarmSettings {
  /** The threshold of locks that match no rule; absent: no alarm. */
  holdTime?: number | undefined;
  /** Thresholds by lock-name pattern (`*`, `?`); the first match wins. */
  rules?: { pattern: string; holdTime: number }[] | undefined;
}

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
   * With `secret`, how long a connection may take to authenticate before it
   * is closed, in milliseconds.
   *
   * @default {10000}
   */
  authDeadline?: number;
  /**
   * A second secret that allows `forceRelease`; without it, forced release
   * is refused.
   */
  adminSecret?: string;
  /** Serve Prometheus metrics; `lockPatterns` get per-lock series. */
  metrics?: { lockPatterns?: string[] };
  /** Hold-time alarms: warnings and holder events, never expiry. */
  alarms?: HoldAlarmSettings;
  /** Where grants, releases, timeouts and refusals are recorded. */
  audit?: AuditLog;
  /**
   * Issues fencing tokens; must strictly increase, and must not throw (it is
   * called in the middle of a release). The `serve` command passes a
   * {@linkcode TokenStore}, which keeps them increasing across restarts, and
   * stops the process when it cannot reserve more.
   *
   * @default {A counter starting at 1}
   */
  nextToken?: () => number;
}

/** The server's own data for a request. */
interface Ticket {
  /** The RPC id to answer. */
  id: unknown;
  /** The wait's timeout while waiting; the hold-time alarm while held. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** When asked for (ms since the epoch). */
  asked: number;
  /** When granted (ms since the epoch); 0 while waiting. */
  granted: number;
  /** Whether the waiter wants position events, and the last one sent. */
  notify: boolean;
  position: number;
  /** Whether the holder wants contention notices, and the last count sent. */
  contention: boolean;
  waitersSeen: number;
}

type Request = LockRequest<Connection, Ticket>;

const PONG = { status: "ok" } as const;
const SHUTDOWN = {
  event: "shutdown",
  message: "The server is shutting down",
} as const;
const MAX_LABEL_LENGTH = 256;

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
  /** The server's metrics, when `metrics` was given. */
  readonly metrics: Metrics | undefined;
  readonly #table: LockTable<Connection, Ticket>;
  readonly #server: MessageServer;
  readonly #maxNameLength: number;
  readonly #maxLocks: number;
  readonly #secret: string | undefined;
  readonly #authDeadline: number;
  readonly #adminSecret: string | undefined;
  readonly #audit: AuditLog | undefined;
  readonly #alarms: HoldAlarms | undefined;
  readonly #authenticated = new WeakSet<Connection>();
  /** Connections that must authenticate soon, and their deadlines. */
  readonly #helloTimers = new Map<
    Connection,
    ReturnType<typeof setTimeout>
  >();
  readonly #labels = new WeakMap<Connection, string>();
  /** Connections closed by a forced release, whose holds end by force. */
  readonly #forced = new WeakSet<Connection>();
  /** Why each closed connection closed, for the log of its releases. */
  readonly #closeReasons = new WeakMap<Connection, string>();
  readonly #startedAt = Date.now();
  /** How many waiters of each lock want position events. */
  readonly #watched = new Map<string, number>();
  /** How many holders of each lock want contention notices. */
  readonly #contended = new Map<string, number>();
  #connectionsTotal = 0;

  /**
   * Starts listening at once.
   *
   * @param options Address, allow-list, limits and operations features.
   * @throws {Deno.errors.AddrInUse} When the port is taken.
   */
  constructor(options: LockServerOptions = {}) {
    this.#maxNameLength = options.maxLockNameLength ??
      DEFAULT_MAX_LOCK_NAME_LENGTH;
    this.#maxLocks = options.maxLocksPerConnection ?? Infinity;
    this.#secret = options.secret;
    this.#authDeadline = options.authDeadline ?? 10_000;
    this.#adminSecret = options.adminSecret;
    this.#audit = options.audit;
    this.#alarms = options.alarms && new HoldAlarms(options.alarms);
    this.#table = new LockTable({
      onGrant: (request) => this.#granted(request),
      onRelease: (request) => this.#released(request),
      ...(options.nextToken ? { nextToken: options.nextToken } : {}),
    });
    this.metrics = options.metrics &&
      new Metrics(options.metrics.lockPatterns ?? [], {
        connections: () => this.#server.connections.size,
        names: () => this.#table.names(),
        lock: (name) => this.#table.count(name),
      });
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
      ...(this.#secret === undefined ? {} : {
        authorize: (message: Message, connection: Connection) =>
          this.#authorize(message, connection),
      }),
      handlers: {
        hello: (message, connection) => this.#hello(message, connection),
        ping: () => PONG,
        status: () => this.status(),
        lock: (message, connection) => this.#lock(message, connection),
        release: (message, connection) => this.#release(message, connection),
        unlock: (message, connection) => this.#unlock(message, connection),
        forceRelease: (message, connection) =>
          this.#forceRelease(message, connection),
      },
      onOpen: (connection) => {
        this.#connectionsTotal++;
        if (this.#secret !== undefined) this.#expectHello(connection);
        this.metrics?.opened();
        if (debugging()) {
          log.debug("Connection {id} opened from {peer}", {
            id: connection.id,
            peer: peer(connection.remoteAddr),
          });
        }
      },
      onClose: (connection, info) => this.#disconnected(connection, info),
      onReject: (addr, reason) => {
        if (reason === "not_allowed") {
          this.metrics?.rejected("allow_list");
          log.warn("Refused connection from {peer}: not in the allow-list", {
            peer: peer(addr),
          });
        } else {
          this.metrics?.rejected("limit");
          this.metrics?.error("too_many_connections");
          log.warn("Refused connection from {peer}: {reason}", {
            peer: peer(addr),
            reason,
          });
        }
      },
      onErrorReply: (code) => this.metrics?.error(code),
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
   * Stops accepting, tells every client the server is going away, and closes
   * every connection; their locks are released.
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
        holders: state.holders.map((request) => this.#describe(request)),
        waiters: state.waiters.map((request) => this.#describe(request)),
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
    const parameters = objectOrEmpty(message.parameters);
    if (this.#secret !== undefined && !this.#authenticated.has(connection)) {
      const given = parameters.secret;
      if (given === undefined) {
        this.#refuse(message, connection, "auth_required");
        return undefined;
      }
      if (typeof given !== "string" || !sameSecret(given, this.#secret)) {
        this.#refuse(message, connection, "auth_failed");
        return undefined;
      }
      this.#authenticated.add(connection);
      clearTimeout(this.#helloTimers.get(connection));
      this.#helloTimers.delete(connection);
    }
    const label = parameters.client;
    if (label !== undefined) {
      if (typeof label !== "string" || label.length > MAX_LABEL_LENGTH) {
        throw new MessageError(
          "invalid_parameters",
          `"client" must be a string of at most ${MAX_LABEL_LENGTH} characters`,
        );
      }
      this.#labels.set(connection, label);
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
      this.metrics?.error(error.code);
      connection.send(
        id === undefined
          ? { command: "lock", result: { status: "invalid" }, error }
          : { id, result: { status: "invalid" }, error },
      );
      return undefined;
    }
    const {
      lockName,
      mode = "exclusive",
      wait,
      notify = false,
      contention = false,
    } = parameters;
    if (this.#table.countOf(connection) >= this.#maxLocks) {
      this.#refused(connection, lockName, mode, "limit_exceeded");
      throw new MessageError(
        "limit_exceeded",
        `This connection already holds or waits for ${this.#maxLocks} locks, the limit`,
      );
    }
    const ticket: Ticket = {
      id,
      timer: undefined,
      asked: Date.now(),
      granted: 0,
      notify,
      position: 0,
      contention,
      waitersSeen: 0,
    };
    const request = this.#table.acquire(
      connection,
      lockName,
      mode,
      ticket,
      wait !== 0,
    );
    if (typeof request === "string") {
      this.#refused(connection, lockName, mode, request);
      if (request === "busy") return { status: "busy" };
      throw new MessageError(request, refusal(request, lockName));
    }
    if (request.held) {
      this.#held(request);
      this.#changed(lockName);
      return { status: "ok", token: request.token };
    }
    if (debugging()) {
      log.debug("Connection {id} waits for {name}", {
        id: connection.id,
        name: lockName,
      });
    }
    if (wait !== undefined) {
      ticket.timer = setTimeout(() => this.#expire(request), wait);
    }
    if (notify) increment(this.#watched, lockName);
    this.#changed(lockName);
    return undefined;
  }

  #release(message: Message, connection: Connection): ReleaseResult {
    const name = objectOrEmpty(message.parameters).lockName;
    const error = checkLockName(name, this.#maxNameLength);
    if (error !== null) throw new MessageError(error.code, error.message);
    return { status: this.#remove(connection, name as string) };
  }

  #unlock(message: Message, connection: Connection): undefined {
    const name = message.lockName;
    if (checkLockName(name, this.#maxNameLength) !== null) {
      this.metrics?.error("invalid_parameters");
      connection.send({ attempted: "unlock", result: "invalid" });
      return;
    }
    const result = this.#remove(connection, name as string);
    connection.send({ attempted: "unlock", result, lockName: name });
  }

  /**
   * The operators' last resort for a holder on a vanished host: closes the
   * connection of every holder of the lock (so their `lost` signals fire),
   * which releases it to the next waiter.
   */
  #forceRelease(
    message: Message,
    connection: Connection,
  ): ForceReleaseResult | undefined {
    if (this.#adminSecret === undefined) {
      throw new MessageError(
        "admin_disabled",
        'Forced release is disabled: the server has no "admin" secret',
      );
    }
    const parameters = objectOrEmpty(message.parameters);
    const given = parameters.adminSecret;
    if (typeof given !== "string" || !sameSecret(given, this.#adminSecret)) {
      this.#refuse(message, connection, "auth_failed");
      return undefined;
    }
    const name = parameters.lockName;
    const error = checkLockName(name, this.#maxNameLength);
    if (error !== null) throw new MessageError(error.code, error.message);
    const holders = this.#table.inspect(name as string)?.holders ?? [];
    if (holders.length === 0) return { status: "notFound" };
    if (holders.some((request) => request.owner === connection)) {
      throw new MessageError(
        "invalid_parameters",
        `This connection holds lock "${name}": release it with "release"`,
      );
    }
    const released = holders.map((request) => {
      const holder = request.owner;
      log.warn(
        "Forced release of {name} (token {token}) held by connection {id} from {peer}, asked by connection {by}: closing the holder's connection",
        {
          name: request.name,
          token: request.token,
          id: holder.id,
          peer: peer(holder.remoteAddr),
          by: connection.id,
        },
      );
      return this.#describe(request);
    });
    for (const request of holders) {
      const holder = request.owner;
      this.#forced.add(holder);
      const event: ForcedReleaseEvent = {
        event: "forced_release",
        lockName: request.name,
        token: request.token,
      };
      holder.closeWith(event, { reason: "refused" });
    }
    return { status: "ok", released };
  }

  /** Releases a hold or withdraws a waiting request (answering it). */
  #remove(connection: Connection, name: string): "ok" | "notFound" {
    const request = this.#table.release(connection, name);
    if (request === null) return "notFound";
    if (!request.held) {
      this.#left(request);
      this.#record("withdraw", request);
      connection.send({
        id: request.ticket.id,
        result: { status: "cancelled" },
      });
    }
    this.#changed(name);
    return "ok";
  }

  #expire(request: Request): void {
    if (!this.#table.withdraw(request)) return;
    this.#left(request);
    this.metrics?.timedOut();
    this.#record("timeout", request);
    request.owner.send({
      id: request.ticket.id,
      result: { status: "timeout" },
    });
    this.#changed(request.name);
  }

  /** A waiting request was granted, during a release. */
  #granted(request: Request): void {
    this.#left(request);
    this.#held(request);
    request.owner.send({
      id: request.ticket.id,
      result: { status: "ok", token: request.token },
    });
  }

  /** A hold begins: count it, audit it, arm its alarm. */
  #held(request: Request): void {
    const ticket = request.ticket;
    ticket.granted = Date.now();
    if (debugging()) {
      log.debug("Granted {name} to connection {id} (token {token})", {
        name: request.name,
        id: request.owner.id,
        token: request.token,
      });
    }
    this.metrics?.granted(request.name, (ticket.granted - ticket.asked) / 1000);
    this.#record("grant", request);
    if (ticket.contention) increment(this.#contended, request.name);
    const threshold = this.#alarms?.thresholdFor(request.name);
    if (threshold !== undefined) {
      ticket.timer = setTimeout(
        () => this.#alarm(request, threshold),
        threshold,
      );
    }
  }

  /**
   * A hold ends, before any grant it allows: by the client's release, or by
   * the end of its connection, forced or not.
   */
  #released(request: Request): void {
    const holder = request.owner;
    const cause: ReleaseCause = holder.open
      ? "client"
      : this.#forced.has(holder)
      ? "force"
      : "disconnect";
    const ticket = request.ticket;
    clearTimeout(ticket.timer);
    if (ticket.contention) {
      ticket.contention = false;
      decrement(this.#contended, request.name);
    }
    this.metrics?.released(cause, (Date.now() - ticket.granted) / 1000);
    if (cause === "client") {
      this.#record("release", request);
      if (debugging()) {
        log.debug("Connection {id} released {name}", {
          id: holder.id,
          name: request.name,
        });
      }
      return;
    }
    this.#record(
      cause === "force" ? "forced_release" : "disconnect_release",
      request,
    );
    const details = {
      name: request.name,
      token: request.token,
      id: holder.id,
      peer: peer(holder.remoteAddr),
      reason: this.#closeReasons.get(holder),
    };
    if (cause === "force") {
      log.info(
        "Released {name} (token {token}) held by connection {id} from {peer}: forced release",
        details,
      );
    } else {
      log.info(
        "Released {name} (token {token}) held by connection {id} from {peer}: connection closed ({reason})",
        details,
      );
    }
  }

  /** A request stopped waiting: granted, withdrawn, timed out or dropped. */
  #left(request: Request): void {
    const ticket = request.ticket;
    clearTimeout(ticket.timer);
    ticket.timer = undefined;
    if (ticket.notify) {
      ticket.notify = false;
      decrement(this.#watched, request.name);
    }
  }

  /** A hold passed its alarm threshold: warn, count, tell the holder. */
  #alarm(request: Request, threshold: number): void {
    const heldFor = Date.now() - request.ticket.granted;
    const holder = request.owner;
    log.warn(
      "Lock {name} (token {token}) has been held for {heldFor} ms by connection {id} from {peer} ({label}), past the alarm threshold of {threshold} ms; it stays held",
      {
        name: request.name,
        token: request.token,
        heldFor,
        id: holder.id,
        peer: peer(holder.remoteAddr),
        label: this.#labels.get(holder) ?? "no label",
        threshold,
      },
    );
    this.metrics?.alarmed();
    const event: HoldAlarmEvent = {
      event: "hold_alarm",
      lockName: request.name,
      token: request.token,
      heldFor,
      threshold,
    };
    holder.send(event);
  }

  /**
   * A lock's queue changed: tell waiters who asked where they now stand, and
   * holders who asked how many wait.
   */
  #changed(name: string): void {
    const watched = this.#watched.has(name);
    const contended = this.#contended.has(name);
    if (!watched && !contended) return;
    const state = this.#table.inspect(name);
    if (state === null) return;
    if (watched) {
      state.waiters.forEach((request, index) => {
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
    if (contended) {
      const waiters = state.waiters.length;
      for (const request of state.holders) {
        const ticket = request.ticket;
        if (!ticket.contention || ticket.waitersSeen === waiters) continue;
        ticket.waitersSeen = waiters;
        const event: ContentionEvent = {
          event: "contention",
          lockName: name,
          waiters,
        };
        request.owner.send(event);
      }
    }
  }

  /**
   * With auth on, lets `hello` through and refuses anything else, including
   * unknown commands, from a connection that has not authenticated.
   */
  #authorize(message: Message, connection: Connection): boolean {
    if (this.#authenticated.has(connection) || message.command === "hello") {
      return true;
    }
    this.#refuse(message, connection, "auth_required");
    return false;
  }

  /** Closes a connection that does not authenticate within the deadline. */
  #expectHello(connection: Connection): void {
    this.#helloTimers.set(
      connection,
      setTimeout(() => {
        this.#helloTimers.delete(connection);
        this.#refuse({ command: "hello" }, connection, "auth_required");
      }, this.#authDeadline),
    );
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
    this.metrics?.rejected("auth");
    this.metrics?.error(code);
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

  /** Audits a request turned away. */
  #refused(
    connection: Connection,
    lock: string,
    mode: LockMode,
    code: string,
  ): void {
    if (this.#audit === undefined) return;
    const entry: AuditEntry = {
      time: new Date().toISOString(),
      event: "refusal",
      lock,
      mode,
      connectionId: connection.id,
      peer: peer(connection.remoteAddr),
      code,
    };
    const label = this.#labels.get(connection);
    if (label !== undefined) entry.label = label;
    this.#audit.record(entry);
  }

  #record(event: AuditEvent, request: Request): void {
    if (this.#audit === undefined) return;
    const entry: AuditEntry = {
      time: new Date().toISOString(),
      event,
      lock: request.name,
      mode: request.mode,
      connectionId: request.owner.id,
      peer: peer(request.owner.remoteAddr),
    };
    if (request.held) entry.token = request.token;
    const label = this.#labels.get(request.owner);
    if (label !== undefined) entry.label = label;
    this.#audit.record(entry);
  }

  #describe(request: Request): StatusEntry {
    const ticket = request.ticket;
    const described: StatusEntry = {
      connectionId: request.owner.id,
      peer: peer(request.owner.remoteAddr),
      mode: request.mode,
      since: new Date(request.held ? ticket.granted : ticket.asked)
        .toISOString(),
    };
    const label = this.#labels.get(request.owner);
    if (label !== undefined) described.label = label;
    if (request.held) described.token = request.token;
    return described;
  }

  #disconnected(connection: Connection, info: CloseInfo): void {
    if (debugging()) {
      log.debug("Connection {id} closed: {reason}", {
        id: connection.id,
        reason: info.reason,
      });
    }
    if (info.error instanceof FrameError) this.metrics?.error(info.error.code);
    this.#closeReasons.set(connection, info.reason);
    clearTimeout(this.#helloTimers.get(connection));
    this.#helloTimers.delete(connection);
    const changed = new Set<string>();
    for (const request of this.#table.releaseAll(connection)) {
      changed.add(request.name);
      if (!request.held) this.#left(request);
    }
    for (const name of changed) this.#changed(name);
  }
}

/** Hold-time thresholds by lock name: the first matching rule, else the default. */
class HoldAlarms {
  readonly #rules: { pattern: RegExp; holdTime: number }[];
  readonly #default: number | undefined;

  constructor(settings: HoldAlarmSettings) {
    this.#rules = (settings.rules ?? []).map((rule) => ({
      pattern: globToRegExp(rule.pattern),
      holdTime: rule.holdTime,
    }));
    this.#default = settings.holdTime;
  }

  thresholdFor(name: string): number | undefined {
    for (const rule of this.#rules) {
      if (rule.pattern.test(name)) return rule.holdTime;
    }
    return this.#default;
  }
}

function increment(counts: Map<string, number>, name: string): void {
  counts.set(name, (counts.get(name) ?? 0) + 1);
}

function decrement(counts: Map<string, number>, name: string): void {
  const count = counts.get(name)! - 1;
  if (count === 0) counts.delete(name);
  else counts.set(name, count);
}

function objectOrEmpty(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as Record<string, unknown>
    : {};
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

function peer(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
