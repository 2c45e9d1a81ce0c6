/**
 * The pklock lock server: the composition root. It wires a
 * {@linkcode MessageServer} (sockets, framing, replies) to the lock protocol's
 * commands ({@linkcode LockCommands}), one session per connection
 * ({@linkcode Sessions}), a lock space and the answers of its outcomes
 * ({@linkcode LockOutcomes}), and the journal of every lifecycle event
 * ({@linkcode Journal}). Where the locks live is decided in one place, the
 * lock space made below; see `lock_space.ts` for the seam.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { MessageServer } from "../message/server.ts";
import {
  DEFAULT_MAX_LOCK_NAME_LENGTH,
  DEFAULT_PORT,
  type StatusResult,
} from "../protocol/lock_protocol.ts";
import { LockCommands } from "./commands.ts";
import { HoldAlarms } from "./hold_alarms.ts";
import { Journal, type Timing } from "./journal.ts";
import { isShared, LocalLockSpace, type LockSpace } from "./lock_space.ts";
import type { LockServerOptions } from "./lock_server_options.ts";
import { Metrics } from "./metrics.ts";
import { LockOutcomes, type Ticket } from "./outcomes.ts";
import {
  defaultRequestBudget,
  RequestBudget,
  type RequestBudgetLimits,
} from "./request_budget.ts";
import { Sessions } from "./session.ts";
import { StatusReports } from "./status.ts";

const PONG = { status: "ok" } as const;
const SHUTDOWN = {
  event: "shutdown",
  message: "The server is shutting down",
} as const;

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
  /** The budget of requests held and queued, in all and per IP. */
  readonly budget: RequestBudgetLimits;
  readonly #server: MessageServer;
  readonly #space: LockSpace<Ticket>;
  readonly #budget: RequestBudget<Ticket>;
  readonly #sessions = new Sessions();
  readonly #status: StatusReports;

  /**
   * Starts listening at once.
   *
   * @param options Address, allow-list, limits and operations features.
   * @throws {Deno.errors.AddrInUse} When the port is taken.
   */
  constructor(options: LockServerOptions = {}) {
    const sessions = this.#sessions;
    this.metrics = options.metrics &&
      new Metrics(options.metrics.lockPatterns ?? [], {
        connections: () => this.#server.connections.size,
        names: () => this.#space.names(),
        lock: (name) => this.#space.count(name),
        oldestHold: () => this.#budget.oldestHold()?.ticket.granted,
        auditDropped: () => options.audit?.dropped ?? 0,
      });
    const journal = new Journal({
      metrics: this.metrics,
      audit: options.audit,
    });
    const derived = defaultRequestBudget();
    const maxRequests = options.maxRequests ?? derived.maxRequests;
    const budget = this.budget = {
      maxRequests,
      maxRequestsPerIp: options.maxRequestsPerIp ??
        Math.min(derived.maxRequestsPerIp, maxRequests),
    };
    journal.budgeted(budget);
    const outcomes = new LockOutcomes(
      journal,
      options.alarms && new HoldAlarms(options.alarms),
      // The one place that decides where the locks live.
      options.lockSpace ??
        ((events) =>
          new LocalLockSpace(events, { nextToken: options.nextToken })),
      this.#budget = new RequestBudget(budget),
    );
    const space = this.#space = outcomes.space;
    const shared = isShared<Ticket, Timing>(space) ? space : undefined;
    const status = this.#status = new StatusReports(shared?.whole ?? space, {
      startedAt: Date.now(),
      connections: () => ({
        current: this.#server.connections.size,
        total: sessions.opened,
      }),
      cluster: shared && (() => shared.cluster()),
    }, { maxOutputBytes: options.maxOutputBytes });
    const { secret, authDeadline = 10_000 } = options;
    const commands = new LockCommands(outcomes, journal, {
      maxLockNameLength: options.maxLockNameLength ??
        DEFAULT_MAX_LOCK_NAME_LENGTH,
      maxLocksPerConnection: options.maxLocksPerConnection ?? Infinity,
      secret,
      adminSecret: options.adminSecret,
      tokensLeft: options.tokensLeft ?? (() => Infinity),
    });
    this.#server = new MessageServer({
      ...options,
      port: options.port ?? DEFAULT_PORT,
      authorize: secret === undefined
        ? undefined
        : (message, connection) =>
          commands.authorize(message, sessions.of(connection)),
      // Closing a connection with a request in the table takes it away.
      holdsState: (connection) => space.countOf(sessions.of(connection)) > 0,
      handlers: {
        hello: (message, connection) => {
          connection.skipsBadPayloads = false;
          return commands.hello(message, sessions.of(connection));
        },
        ping: () => PONG,
        status: (message, connection) =>
          status.answer(message, sessions.of(connection)),
        lock: (message, connection) =>
          commands.lock(message, sessions.of(connection)),
        release: (message, connection) =>
          commands.release(message, sessions.of(connection)),
        unlock: (message, connection) =>
          commands.unlock(message, sessions.of(connection)),
        forceRelease: (message, connection) =>
          commands.forceRelease(message, sessions.of(connection)),
      },
      onOpen: (connection) => {
        // Legacy until hello: the PHP server ignored frames it could not read.
        connection.skipsBadPayloads = secret === undefined;
        const session = sessions.open(connection, secret === undefined);
        if (secret !== undefined) commands.expectHello(session, authDeadline);
        journal.opened(session);
      },
      onClose: (connection, info) => {
        const session = sessions.close(connection, info.reason);
        space.releaseAll(
          session,
          info.reason === "forced_release" ? "force" : "disconnect",
        );
        journal.closed(session, info);
      },
      onReject: (addr, reason) => journal.rejected(addr, reason),
      onErrorReply: (code) => journal.errorReplied(code),
      onError: (error, message, connection) =>
        journal.handlerFailed(error, message, connection),
    });
    const allowed = this.#server.maxConnections;
    if ((options.maxConnections ?? 0) > allowed) {
      getLogger(["pklock", "server"]).warn(
        "maxConnections {asked} is more than the open-file limit allows: serving at most {allowed} connections",
        { asked: options.maxConnections, allowed },
      );
    }
  }

  /**
   * Grants the waiters whose turn came while `nextToken` could issue no
   * token: call it once tokens can be had again.
   */
  resumeGrants(): void {
    this.#space.resumeGrants();
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
   * Every lock with its holders and waiters, sorted by name, and the server's
   * counters: the whole report at once, which the network's `status` sends
   * in pages.
   *
   * @returns The report, with its totals.
   */
  status(): StatusResult {
    return this.#status.whole();
  }
}
