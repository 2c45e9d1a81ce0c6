/**
 * The journal: every lifecycle event of the lock server (a connection opened,
 * rejected, denied or closed; a request queued, granted, released with its
 * cause, withdrawn, refused; a hold alarmed or forced) turned into its log
 * line, its audit entry and its metric, in one place. Lock logic calls one
 * method per event and reads as lock logic.
 *
 * Logs are for people and the audit log is the record: the audit log gets one
 * entry per lock, the log one line per closed connection for the locks its end
 * released.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { CloseInfo, Connection } from "../message/connection.ts";
import type { RejectReason } from "../message/server.ts";
import type { Message } from "../protocol/frame.ts";
import {
  auditEntry,
  type AuditEvent,
  type AuditLog,
  auditParty,
} from "./audit.ts";
import type {
  LockAsk,
  LockRequest,
  ReleaseCause,
  WithdrawCause,
} from "./lock_space.ts";
import type { Metrics } from "./metrics.ts";
import { WarningThrottle } from "./peer_penalties.ts";
import type { RequestBudgetLimits } from "./request_budget.ts";
import { peerOf, type Session } from "./session.ts";

const log = getLogger(["pklock", "server"]);

/** The end of a throttled warning that stands for others left out. */
const SUPPRESSED =
  " ({suppressed} more like it from that address not logged since the last such line)";

/** What the journal reads of a request's ticket: when it was asked and granted. */
export interface Timing {
  /** When asked for (ms since the epoch). */
  readonly asked: number;
  /** When granted (ms since the epoch); 0 while waiting. */
  readonly granted: number;
}

type Request = LockRequest<Session, Timing>;

/** Where the journal writes: metrics and the audit log are optional. */
export interface JournalSinks {
  /** The server's metrics. */
  metrics?: Metrics | undefined;
  /** The audit log. */
  audit?: AuditLog | undefined;
  /**
   * The shortest time between two warnings about refusals of one IP, in ms.
   *
   * @default {10000}
   */
  warningIntervalMs?: number | undefined;
}

/** Writes each lifecycle event to the log, the audit log and the metrics. */
export class Journal {
  readonly #metrics: Metrics | undefined;
  readonly #audit: AuditLog | undefined;
  /** Warnings about peers, by kind and IP. */
  readonly #warnings: WarningThrottle;

  /**
   * Creates the journal.
   *
   * @param sinks Metrics and audit log, when on.
   */
  constructor(sinks: JournalSinks) {
    this.#metrics = sinks.metrics;
    this.#audit = sinks.audit;
    this.#warnings = new WarningThrottle({
      intervalMs: sinks.warningIntervalMs,
    });
  }

  /**
   * Whether debug lines are wanted: checked first so that, when they are not,
   * the hot path does not even build their properties.
   *
   * @returns `true` at debug level.
   */
  debugging(): boolean {
    return log.isEnabledFor("debug");
  }

  /**
   * The server started with this budget of requests.
   *
   * @param budget The limits in force.
   */
  budgeted(budget: RequestBudgetLimits): void {
    log.info(
      "Budget of lock requests held and queued: {maxRequests} in all, {maxRequestsPerIp} per IP address",
      { ...budget },
    );
  }

  /**
   * A connection was accepted.
   *
   * @param session Its new session.
   */
  opened(session: Session): void {
    this.#metrics?.opened();
    if (this.debugging()) {
      log.debug("Connection {id} opened from {peer}", {
        id: session.id,
        peer: session.peer,
      });
    }
  }

  /**
   * A peer was turned away before it could send anything. The warning is
   * written once per IP per interval: a flood of refusals costs a few lines,
   * each saying how many were left out.
   *
   * @param addr The peer.
   * @param reason Outside the allow-list, or beyond a connection limit.
   */
  rejected(addr: Deno.NetAddr, reason: RejectReason): void {
    const allowList = reason === "not_allowed";
    this.#metrics?.rejected(allowList ? "allow_list" : "limit");
    if (!allowList) this.#metrics?.error("too_many_connections");
    this.#warnThrottled(
      `refused ${addr.hostname}`,
      allowList
        ? "Refused connection from {peer}: not in the allow-list"
        : "Refused connection from {peer}: {reason}",
      { peer: peerOf(addr), reason },
    );
  }

  /**
   * A connection failed authentication (or guessed the admin secret wrong, or
   * guessed while penalized) and is being closed. Written once per IP per
   * interval, with how many were left out, so a burst of guesses shows as
   * such.
   *
   * @param session Its session.
   * @param code `auth_required` or `auth_failed`.
   */
  denied(session: Session, code: string): void {
    this.#metrics?.rejected("auth");
    this.#warnThrottled(
      `denied ${session.connection.remoteAddr.hostname}`,
      "Connection {id} from {peer} refused: {code}",
      { id: session.id, peer: session.peer, code },
    );
  }

  /**
   * A request was refused by the server's or its IP's budget: one warning per
   * IP per interval.
   *
   * @param session Who asked.
   * @param over Which budget.
   */
  overBudget(session: Session, over: "server" | "ip"): void {
    this.#warnThrottled(
      `over budget ${session.connection.remoteAddr.hostname}`,
      "Refused a lock request of connection {id} from {peer}: the {over} budget of requests is used up",
      { id: session.id, peer: session.peer, over },
    );
  }

  /**
   * An error reply was sent.
   *
   * @param code Its stable code.
   */
  errorReplied(code: string): void {
    this.#metrics?.error(code);
  }

  /**
   * A handler threw something other than a `MessageError`.
   *
   * @param error What it threw.
   * @param message The message it handled.
   * @param connection Whose.
   */
  handlerFailed(
    error: unknown,
    message: Message,
    connection: Connection,
  ): void {
    log.error("Handler failed for {command} from connection {id}: {error}", {
      command: message.command,
      id: connection.id,
      error,
    });
  }

  /**
   * A request waits in its lock's queue.
   *
   * @param request The request.
   */
  queued(request: Request): void {
    if (this.debugging()) {
      log.debug("Connection {id} waits for {name}", {
        id: request.owner.id,
        name: request.name,
      });
    }
  }

  /**
   * A request holds its lock, its ticket's `granted` time set.
   *
   * @param request The request.
   */
  granted(request: Request): void {
    if (this.debugging()) {
      log.debug("Granted {name} to connection {id} (token {token})", {
        name: request.name,
        id: request.owner.id,
        token: request.token,
      });
    }
    const { asked, granted } = request.ticket;
    this.#metrics?.granted(request.name, (granted - asked) / 1000);
    this.#record("grant", request);
  }

  /**
   * A hold ended.
   *
   * @param request The hold.
   * @param cause The holder's release, its connection's end, or by force.
   */
  released(request: Request, cause: ReleaseCause): void {
    const heldMs = this.#metrics !== undefined || this.#audit !== undefined
      ? Date.now() - request.ticket.granted
      : 0;
    this.#metrics?.released(cause, heldMs / 1000);
    if (cause === "client") {
      this.#record("release", request, heldMs);
      if (this.debugging()) {
        log.debug("Connection {id} released {name}", {
          id: request.owner.id,
          name: request.name,
        });
      }
      return;
    }
    this.#record(
      cause === "force" ? "forced_release" : "disconnect_release",
      request,
      heldMs,
    );
    request.owner.releasedOnClose(request.name);
  }

  /**
   * A waiting request left the queue ungranted.
   *
   * @param request The request.
   * @param cause Why.
   */
  withdrawn(request: Request, cause: WithdrawCause): void {
    if (cause === "timeout") {
      this.#metrics?.timedOut();
      this.#record("timeout", request);
    } else if (cause === "cancelled") {
      this.#metrics?.answered("cancelled");
      this.#record("withdraw", request);
    }
  }

  /**
   * A request was turned away.
   *
   * @param session Who asked.
   * @param ask What it asked for.
   * @param code Why.
   */
  refused(session: Session, ask: LockAsk, code: string): void {
    if (code === "busy") this.#metrics?.answered("busy");
    this.#audit?.record(
      auditEntry("refusal", session, ask.name, ask.mode, 0, code),
    );
  }

  /**
   * Whether {@linkcode Journal.vacated} does anything: only per-lock metric
   * series care that a lock left the table.
   *
   * @returns `true` when metrics have `lockPatterns`.
   */
  tracksLocks(): boolean {
    return this.#metrics?.perLock ?? false;
  }

  /**
   * Nobody holds or waits for a lock any more.
   *
   * @param name The lock.
   */
  vacated(name: string): void {
    this.#metrics?.vacated(name);
  }

  /**
   * A forced release is closing a holder's connection.
   *
   * @param request The hold.
   * @param by The operator's session.
   */
  forcing(request: Request, by: Session): void {
    log.warn(
      "Forced release of {name} (token {token}) held by connection {id} from {peer} ({label}) for {heldMs} ms, asked by connection {by} from {byPeer} ({byLabel}): closing the holder's connection",
      {
        name: request.name,
        token: request.token,
        id: request.owner.id,
        peer: request.owner.peer,
        label: request.owner.label ?? "no label",
        heldMs: Date.now() - request.ticket.granted,
        by: by.id,
        byPeer: by.peer,
        byLabel: by.label ?? "no label",
      },
    );
  }

  /**
   * A hold passed its alarm threshold.
   *
   * @param request The hold.
   * @param heldFor How long it has been held, in ms.
   * @param threshold The threshold, in ms.
   */
  alarmed(request: Request, heldFor: number, threshold: number): void {
    const holder = request.owner;
    log.warn(
      "Lock {name} (token {token}) has been held for {heldFor} ms by connection {id} from {peer} ({label}), past the alarm threshold of {threshold} ms; it stays held",
      {
        name: request.name,
        token: request.token,
        heldFor,
        id: holder.id,
        peer: holder.peer,
        label: holder.label ?? "no label",
        threshold,
      },
    );
    this.#metrics?.alarmed();
  }

  /**
   * A connection closed and its requests are gone: one line for it, and one
   * for the holds its end released, however many (naming the first
   * `MAX_LOGGED_NAMES`, ten).
   *
   * @param session Its session.
   * @param info Why it closed.
   */
  closed(session: Session, info: CloseInfo): void {
    if (this.debugging()) {
      log.debug("Connection {id} closed: {reason}", {
        id: session.id,
        reason: info.reason,
      });
    }
    const count = session.releasedCount;
    if (count === 0) return;
    const details = {
      count,
      id: session.id,
      peer: session.peer,
      label: session.label ?? "no label",
      reason: info.reason,
      names: session.releasedNames,
    };
    if (info.reason === "forced_release") {
      log.info(
        "Released {count} lock(s) held by connection {id} from {peer} ({label}): forced release: {names}",
        details,
      );
    } else {
      log.info(
        "Released {count} lock(s) held by connection {id} from {peer} ({label}): connection closed ({reason}): {names}",
        details,
      );
    }
  }

  /**
   * Writes a warning about a peer unless it is left out (one per kind and IP
   * per interval); the next one written says how many were.
   */
  #warnThrottled(
    key: string,
    message: string,
    details: Record<string, unknown>,
  ): void {
    const suppressed = this.#warnings.admit(key);
    if (suppressed === null) return;
    if (suppressed === 0) log.warn(message, details);
    else log.warn(message + SUPPRESSED, { ...details, suppressed });
  }

  #record(event: AuditEvent, request: Request, heldMs?: number): void {
    if (this.#audit === undefined) return;
    const owner = request.owner;
    const line = auditEntry(
      event,
      owner,
      request.name,
      request.mode,
      request.token,
    );
    if (heldMs !== undefined) line.heldMs = heldMs;
    if (event === "forced_release" && owner.forcedBy !== undefined) {
      line.forcedBy = auditParty(owner.forcedBy);
    }
    this.#audit.record(line);
  }
}
