/**
 * The journal of connections: each event of a connection's life (accepted,
 * turned away, denied, closed with the locks its end released) and of the
 * replies it got, turned into its log line and its metric. The journal of
 * lock events (journal.ts) builds on it.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Connection } from "../message/connection.ts";
import type { CloseInfo } from "../message/connection_types.ts";
import type { RejectReason } from "../message/admission.ts";
import type { Message } from "../protocol/frame.ts";
import type { Metrics } from "./metrics.ts";
import { WarningThrottle } from "./peer_penalties.ts";
import type { RequestBudgetLimits } from "./request_budget.ts";
import { peerOf, type Session } from "./session.ts";

const log = getLogger(["pklock", "server"]);

/** The end of a throttled warning that stands for others left out. */
const SUPPRESSED =
  " ({suppressed} more like it from that address not logged since the last such line)";

/** Where the journal of connections writes: metrics are optional. */
export interface ConnectionJournalSinks {
  /** The server's metrics. */
  metrics?: Metrics | undefined;
  /**
   * The shortest time between two warnings about refusals of one IP, in ms.
   *
   * @default {10000}
   */
  warningIntervalMs?: number | undefined;
}

/** Writes each connection event to the log and the metrics. */
export class ConnectionJournal {
  /** The server's metrics, when on. */
  protected readonly metrics: Metrics | undefined;
  /** Warnings about peers, by kind and IP. */
  readonly #warnings: WarningThrottle;

  /**
   * Creates the journal.
   *
   * @param sinks Metrics, when on, and the interval of warnings.
   */
  constructor(sinks: ConnectionJournalSinks) {
    this.metrics = sinks.metrics;
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
    this.metrics?.opened();
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
    this.metrics?.rejected(allowList ? "allow_list" : "limit");
    if (!allowList) this.metrics?.error("too_many_connections");
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
    this.metrics?.rejected("auth");
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
    this.metrics?.error(code);
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
    // Below info (--log-level warning) the line's text is not even built.
    if (count === 0 || !log.isEnabledFor("info")) return;
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
}
