/**
 * What each command of the lock protocol means: `hello` (and authentication),
 * `lock`, `release`, the legacy `unlock`, and `forceRelease`. Commands check
 * their parameters, ask the lock space, and leave the answer of a lock request
 * to its outcome ({@linkcode LockOutcomes}).
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { MessageError } from "../message/errors.ts";
import type { Message } from "../protocol/frame.ts";
import {
  checkLockName,
  type ForcedReleaseEvent,
  type ForceReleaseResult,
  type HelloResult,
  type LockResult,
  type ParameterError,
  parseLockParameters,
  type ReleaseResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import type { Journal, Timing } from "./journal.ts";
import { isShared } from "./lock_space.ts";
import { GuessPenalty } from "./peer_penalties.ts";
import type { BudgetRefusal, RequestBudget } from "./request_budget.ts";
import type { LockOutcomes, Ticket } from "./outcomes.ts";
import type { Session } from "./session.ts";
import { describe } from "./status.ts";

/** What the commands are configured with. */
export interface CommandSettings {
  /** The longest lock name, in characters. */
  maxLockNameLength: number;
  /** The most locks one connection may hold or wait for at once. */
  maxLocksPerConnection: number;
  /** The secret of `hello`, when authentication is on. */
  secret: string | undefined;
  /** The secret of `forceRelease`, when forced release is on. */
  adminSecret: string | undefined;
  /**
   * How many fencing tokens can still be issued if no new reservation
   * succeeds: `Infinity` while reservations succeed.
   */
  tokensLeft: () => number;
}

/** The longest label a client may give in `hello`. */
const MAX_LABEL_LENGTH = 256;
const INVALID: LockResult = { status: "invalid" };
const NEEDS_ID = {
  code: "invalid_parameters",
  message: '"lock" is a request and needs an "id"',
};
const AUTH_REQUIRED = {
  code: "auth_required",
  message:
    'This server requires authentication: send "hello" with the secret first',
};
const AUTH_FAILED = { code: "auth_failed", message: "Authentication failed" };
/** What a connection that never authenticated is answered as. */
const HELLO: Message = { command: "hello" };

/** The lock protocol's command handlers, each given the caller's session. */
export class LockCommands {
  readonly #outcomes: LockOutcomes;
  readonly #journal: Journal;
  readonly #settings: CommandSettings;
  /** Wrong admin secrets, per IP: after one, the next waits its penalty. */
  readonly #guesses = new GuessPenalty();

  /**
   * Creates the handlers.
   *
   * @param outcomes The lock space and the answers of its outcomes.
   * @param journal Where authentication failures are recorded.
   * @param settings Limits and secrets.
   */
  constructor(
    outcomes: LockOutcomes,
    journal: Journal,
    settings: CommandSettings,
  ) {
    this.#outcomes = outcomes;
    this.#journal = journal;
    this.#settings = settings;
  }

  /**
   * Gives a new connection the authentication deadline.
   *
   * @param session The new connection's session.
   * @param ms How long it may take.
   */
  expectHello(session: Session, ms: number): void {
    session.expectAuthentication(
      ms,
      () => this.#deny(HELLO, session, "auth_required"),
    );
  }

  /**
   * With authentication on, lets `hello` through and refuses anything else,
   * unknown commands included, from a connection that has not authenticated.
   *
   * @param message The message about to be dispatched.
   * @param session Its sender.
   * @returns Whether to dispatch it.
   */
  authorize(message: Message, session: Session): boolean {
    if (session.authenticated || message.command === "hello") return true;
    this.#deny(message, session, "auth_required");
    return false;
  }

  /**
   * `hello`: authenticates, takes the label, says who the server is.
   *
   * @param message The request.
   * @param session Its sender.
   * @returns The reply, or `undefined` when the connection was refused.
   */
  hello(message: Message, session: Session): HelloResult | undefined {
    const parameters = objectOrEmpty(message.parameters);
    const secret = this.#settings.secret;
    if (secret !== undefined && !session.authenticated) {
      const given = parameters.secret;
      if (given === undefined) {
        this.#deny(message, session, "auth_required");
        return undefined;
      }
      if (typeof given !== "string" || !sameSecret(given, secret)) {
        this.#deny(message, session, "auth_failed");
        return undefined;
      }
      session.authenticate();
    }
    session.greeted = true;
    const label = parameters.client;
    if (label !== undefined) {
      if (typeof label !== "string" || label.length > MAX_LABEL_LENGTH) {
        throw new MessageError(
          "invalid_parameters",
          `"client" must be a string of at most ${MAX_LABEL_LENGTH} characters`,
        );
      }
      session.label = label;
    }
    return {
      status: "ok",
      server: "pklock",
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      connectionId: session.id,
    };
  }

  /**
   * `lock`: asks the lock space; its outcome answers. Invalid parameters get
   * the legacy reply that carries both a `result` and an `error`.
   *
   * @param message The request.
   * @param session Its sender.
   * @throws {MessageError} `limit_exceeded` (this connection's limit, the
   *   server's or this IP's budget), `tokens_unavailable`.
   */
  lock(message: Message, session: Session): undefined {
    const id = message.id;
    const parameters = parseLockParameters(
      message.parameters,
      this.#settings.maxLockNameLength,
    );
    if ("code" in parameters || id === undefined) {
      const error = id === undefined ? NEEDS_ID : parameters as ParameterError;
      session.connection.replyError(message, error, { result: INVALID });
      return;
    }
    const {
      lockName,
      mode = "exclusive",
      limit,
      wait,
      notify = false,
      contention = false,
    } = parameters;
    const ticket: Ticket = {
      name: lockName,
      mode,
      limit,
      wait,
      id,
      timer: undefined,
      asked: Date.now(),
      granted: 0,
      notify,
      watching: false,
      position: 0,
      contention,
      waitersSeen: 0,
    };
    const { space, budget } = this.#outcomes;
    const max = this.#settings.maxLocksPerConnection;
    if (space.countOf(session) >= max) {
      this.#journal.refused(session, ticket, "limit_exceeded");
      throw new MessageError(
        "limit_exceeded",
        `This connection already holds or waits for ${max} locks, the limit`,
      );
    }
    const over = budget.refusal(session);
    if (over !== null) {
      this.#journal.refused(session, ticket, "limit_exceeded");
      this.#journal.overBudget(session, over);
      throw new MessageError(
        "limit_exceeded",
        overBudgetText(over, session, budget),
      );
    }
    // Every waiter may need a token when its turn comes: a new request is
    // admitted only while the tokens left cover it and all of them.
    if (this.#settings.tokensLeft() <= budget.waiting) {
      this.#journal.refused(session, ticket, "tokens_unavailable");
      throw new MessageError("tokens_unavailable", TOKENS_UNAVAILABLE);
    }
    space.acquire(session, ticket);
  }

  /**
   * `release`: ends a hold, or withdraws a waiting request (which is answered
   * `cancelled`).
   *
   * @param message The request.
   * @param session Its sender.
   * @returns `ok`, or `notFound` when the connection had no such request.
   * @throws {MessageError} When the name is invalid.
   */
  release(message: Message, session: Session): ReleaseResult {
    const name = objectOrEmpty(message.parameters).lockName;
    const error = checkLockName(name, this.#settings.maxLockNameLength);
    if (error !== null) throw new MessageError(error.code, error.message);
    const found = this.#outcomes.space.release(session, name as string);
    return found ? RELEASED : NOT_FOUND;
  }

  /**
   * The legacy `unlock`: like `release`, answered with an event.
   *
   * @param message The message (it has no id).
   * @param session Its sender.
   */
  unlock(message: Message, session: Session): undefined {
    const name = message.lockName;
    const connection = session.connection;
    if (checkLockName(name, this.#settings.maxLockNameLength) !== null) {
      this.#journal.errorReplied("invalid_parameters");
      connection.send({ attempted: "unlock", result: "invalid" });
      return;
    }
    const found = this.#outcomes.space.release(session, name as string);
    connection.send({
      attempted: "unlock",
      result: found ? "ok" : "notFound",
      lockName: name,
    });
  }

  /**
   * `forceRelease`, the operators' last resort for a holder on a vanished
   * host: closes the connection of every holder of the lock (so their `lost`
   * signals fire), which releases it to the next waiter.
   *
   * @param message The request.
   * @param session Its sender.
   * @returns Who was disconnected, or `undefined` when the admin secret was
   *   wrong (the connection is refused).
   * @throws {MessageError} When forced release is off or the name invalid.
   */
  forceRelease(
    message: Message,
    session: Session,
  ): ForceReleaseResult | undefined {
    const adminSecret = this.#settings.adminSecret;
    if (adminSecret === undefined) {
      throw new MessageError(
        "admin_disabled",
        'Forced release is disabled: the server has no "admin" secret',
      );
    }
    const parameters = objectOrEmpty(message.parameters);
    const given = parameters.adminSecret;
    const ip = session.connection.remoteAddr.hostname;
    const penalty = this.#guesses.remaining(ip);
    if (penalty > 0) {
      // Refused unchecked, but never closed: the penalty is the address's,
      // and another client of that address (every local client shares
      // 127.0.0.1) may hold locks on this connection.
      this.#journal.denied(session, "auth_failed");
      session.connection.replyError(message, {
        code: "auth_failed",
        message:
          `Authentication failed: too many wrong admin secrets from ${ip}; the next is checked in ${
            Math.ceil(penalty)
          } ms`,
      });
      return undefined;
    }
    if (typeof given !== "string" || !sameSecret(given, adminSecret)) {
      this.#guesses.failed(ip);
      this.#deny(message, session, "auth_failed");
      return undefined;
    }
    this.#guesses.succeeded(ip);
    const name = parameters.lockName;
    const error = checkLockName(name, this.#settings.maxLockNameLength);
    if (error !== null) throw new MessageError(error.code, error.message);
    const space = this.#outcomes.space;
    const holders = space.inspect(name as string)?.holders ?? [];
    if (holders.some((request) => request.owner === session)) {
      throw new MessageError(
        "invalid_parameters",
        `This connection holds lock "${name}": release it with "release"`,
      );
    }
    // In a cluster, the holders on other nodes lose their keys, and their
    // nodes close their connections.
    const remote = isShared<Ticket, Timing>(space)
      ? space.forceRemote(name as string)
      : [];
    if (holders.length + remote.length === 0) return { status: "notFound" };
    const released = holders.map((request) => {
      this.#journal.forcing(request, session);
      return describe(request);
    });
    for (const request of remote) released.push(describe(request));
    for (const request of holders) {
      request.owner.forcedBy = session;
      const event: ForcedReleaseEvent = {
        event: "forced_release",
        lockName: request.name,
        token: request.token,
      };
      request.owner.connection.closeWith(event, { reason: "forced_release" });
    }
    return { status: "ok", released };
  }

  /** Answers with an authentication error and closes the connection. */
  #deny(
    message: Message,
    session: Session,
    code: "auth_required" | "auth_failed",
    error = code === "auth_required" ? AUTH_REQUIRED : AUTH_FAILED,
  ): void {
    this.#journal.denied(session, code);
    session.connection.replyError(message, error, {
      close: { reason: "refused" },
    });
  }
}

const TOKENS_UNAVAILABLE =
  "No fencing token can be reserved now (the state file cannot be written): " +
  "new lock requests are refused until it can; held locks are kept";

/** The sentence of a request refused by the server's or its IP's budget. */
function overBudgetText(
  over: BudgetRefusal,
  session: Session,
  budget: RequestBudget<Ticket>,
): string {
  return over === "server"
    ? `The server holds and queues ${budget.limits.maxRequests} requests, its budget`
    : `Connections from ${session.connection.remoteAddr.hostname} hold and queue ${budget.limits.maxRequestsPerIp} requests, the budget of one address`;
}

const RELEASED: ReleaseResult = { status: "ok" };
const NOT_FOUND: ReleaseResult = { status: "notFound" };

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
