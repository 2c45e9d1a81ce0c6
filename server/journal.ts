/**
 * The journal: every lifecycle event of the lock server (a connection opened,
 * rejected, denied or closed; a request queued, granted, released with its
 * cause, withdrawn, refused; a hold alarmed or forced) turned into its log
 * line, its audit entry and its metric, in one place. Lock logic calls one
 * method per event and reads as lock logic.
 *
 * Logs are for people and the audit log is the record: the audit log gets one
 * entry per lock, the log one line per closed connection for the locks its end
 * released. Connection events are connection_journal.ts, which this builds on.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  auditEntry,
  type AuditEvent,
  type AuditLog,
  auditParty,
} from "./audit.ts";
import {
  ConnectionJournal,
  type ConnectionJournalSinks,
} from "./connection_journal.ts";
import type {
  LockAsk,
  LockRequest,
  ReleaseCause,
  WithdrawCause,
} from "./lock_space.ts";
import type { Session } from "./session.ts";

const log = getLogger(["pklock", "server"]);

/** What the journal reads of a request's ticket: when it was asked and granted. */
export interface Timing {
  /** When asked for (ms since the epoch). */
  readonly asked: number;
  /** When granted (ms since the epoch); 0 while waiting. */
  readonly granted: number;
}

type Request = LockRequest<Session, Timing>;

/** Where the journal writes: metrics and the audit log are optional. */
export interface JournalSinks extends ConnectionJournalSinks {
  /** The audit log. */
  audit?: AuditLog | undefined;
}

/** Writes each lifecycle event to the log, the audit log and the metrics. */
export class Journal extends ConnectionJournal {
  readonly #audit: AuditLog | undefined;

  /**
   * Creates the journal.
   *
   * @param sinks Metrics and audit log, when on.
   */
  constructor(sinks: JournalSinks) {
    super(sinks);
    this.#audit = sinks.audit;
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
    this.metrics?.granted(request.name, (granted - asked) / 1000);
    this.#record("grant", request);
  }

  /**
   * A hold ended.
   *
   * @param request The hold.
   * @param cause The holder's release, its connection's end, or by force.
   */
  released(request: Request, cause: ReleaseCause): void {
    const heldMs = this.metrics !== undefined || this.#audit !== undefined
      ? Date.now() - request.ticket.granted
      : 0;
    this.metrics?.released(cause, heldMs / 1000);
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
      this.metrics?.timedOut();
      this.#record("timeout", request);
    } else if (cause === "cancelled") {
      this.metrics?.answered("cancelled");
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
    if (code === "busy") this.metrics?.answered("busy");
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
    return this.metrics?.perLock ?? false;
  }

  /**
   * Nobody holds or waits for a lock any more.
   *
   * @param name The lock.
   */
  vacated(name: string): void {
    this.metrics?.vacated(name);
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
    this.metrics?.alarmed();
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
