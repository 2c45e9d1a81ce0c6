/**
 * The audit log: one JSON line per grant, release, disconnect release,
 * timeout, refusal and forced release. Lines are queued up to a byte budget
 * and appended in order, once per tick, so the lock server's hot path never
 * waits for a disk. A file that stops taking bytes (a FIFO nobody reads, a
 * hung network mount) costs entries, never the server's memory: they are
 * counted, logged as an error once per interval, and recorded in the file
 * once it takes bytes again.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { delay, type SyncWriter, type Writer } from "../message/io.ts";
import type { LockMode } from "../protocol/lock_protocol.ts";
import { LogSink } from "./log_sink.ts";
import type { Session } from "./session.ts";

const log = getLogger(["pklock", "audit"]);

/** What happened. */
export type AuditEvent =
  | "grant"
  | "release"
  | "disconnect_release"
  | "forced_release"
  | "timeout"
  | "withdraw"
  | "refusal";

/** One line of the audit log. */
export interface AuditEntry {
  /** When, ISO 8601. */
  time: string;
  /** What happened. */
  event: AuditEvent;
  /** The lock's name. */
  lock: string;
  /** The mode asked for or held. */
  mode: LockMode;
  /** The fencing token of the hold, for grants and releases. */
  token?: number;
  /** The server's id of the connection. */
  connectionId: number;
  /** The peer's address and port. */
  peer: string;
  /** The label the client gave in `hello`. */
  label?: string;
  /** The code of a refusal. */
  code?: string;
  /** How long the lock was held, in ms, for the end of a hold. */
  heldMs?: number;
  /** Who forced a release: the operator's connection. */
  forcedBy?: AuditParty;
}

/** A connection as the audit log names it. */
export interface AuditParty {
  /** The server's id of the connection. */
  connectionId: number;
  /** The peer's address and port. */
  peer: string;
  /** The label the client gave in `hello`. */
  label?: string;
}

/**
 * The line that stands for entries dropped from a full queue, written ahead
 * of the next entries once the file takes bytes again.
 */
export interface AuditDropped {
  /** When it was written, ISO 8601. */
  time: string;
  /** Always `dropped`. */
  event: "dropped";
  /** How many entries were dropped since the last such line. */
  count: number;
}

/** The most audit text queued and not yet written: 4 MiB. */
export const AUDIT_QUEUE_BYTES = 4 * 1_048_576;

/** How often, at most, dropped entries are logged as an error: 10 s. */
const DROPPED_LOG_INTERVAL_MS = 10_000;

/** How long {@linkcode AuditLog.close} waits for the queue to be written. */
const CLOSE_WAIT_MS = 1_000;

/** An append-only JSON-lines file. */
export class AuditLog {
  readonly #file: Deno.FsFile;
  readonly #sink: LogSink;
  /** The drop count at the last error line, and when it was logged. */
  #reported = 0;
  #reportedAt = -Infinity;

  private constructor(file: Deno.FsFile) {
    this.#file = file;
    this.#sink = new LogSink(reportingFailures(file), {
      maxQueuedBytes: AUDIT_QUEUE_BYTES,
      formatDropped: (count) => {
        const line: AuditDropped = {
          time: new Date().toISOString(),
          event: "dropped",
          count,
        };
        return JSON.stringify(line) + "\n";
      },
    });
  }

  /**
   * Opens (or creates) the file for appending.
   *
   * @param path The file.
   * @returns The log.
   */
  static async open(path: string): Promise<AuditLog> {
    return new AuditLog(
      await Deno.open(path, { append: true, create: true, write: true }),
    );
  }

  /** How many entries were dropped so far, in all. */
  get dropped(): number {
    return this.#sink.dropped;
  }

  /**
   * Records one entry; it is written within the current tick's batch, or
   * dropped and counted when the queue is full.
   *
   * @param entry What happened.
   */
  record(entry: AuditEntry): void {
    this.#sink.write(JSON.stringify(entry) + "\n");
    const dropped = this.#sink.dropped;
    if (dropped === this.#reported) return;
    const now = performance.now();
    if (now - this.#reportedAt < DROPPED_LOG_INTERVAL_MS) return;
    log.error(
      "The audit log dropped {count} entries ({total} in all): the file takes no more bytes, {queued} bytes are waiting",
      {
        count: dropped - this.#reported,
        total: dropped,
        queued: this.#sink.queued,
      },
    );
    this.#reported = dropped;
    this.#reportedAt = now;
  }

  /**
   * Writes what is queued, waiting at most a second for a file that takes
   * no bytes, and closes the file.
   */
  async close(): Promise<void> {
    const done = new AbortController();
    await Promise.race([this.#sink.flush(), delay(CLOSE_WAIT_MS, done.signal)]);
    done.abort();
    this.#file.close();
  }
}

/**
 * The file, with a failed write logged: the sink then writes no more, and
 * every later entry is counted as dropped.
 */
function reportingFailures(file: Deno.FsFile): Writer & SyncWriter {
  return {
    async write(bytes) {
      try {
        return await file.write(bytes);
      } catch (error) {
        log.error("Cannot write the audit log: {error}", { error });
        throw error;
      }
    },
    writeSync: (bytes) => file.writeSync(bytes),
  };
}

/**
 * A connection as the audit log names it.
 *
 * @param session The connection's session.
 * @returns Its id, peer and label.
 */
export function auditParty(session: Session): AuditParty {
  const party: AuditParty = { connectionId: session.id, peer: session.peer };
  if (session.label !== undefined) party.label = session.label;
  return party;
}

/**
 * An audit entry; `token` 0 (waiting) and `code` "" are left out.
 *
 * @param event What happened.
 * @param session Whose request.
 * @param lock The lock's name.
 * @param mode The mode held or asked for.
 * @param token The hold's token, 0 for none.
 * @param code A refusal's code, "" for none.
 * @returns The entry, stamped now.
 */
export function auditEntry(
  event: AuditEvent,
  session: Session,
  lock: string,
  mode: LockMode,
  token: number,
  code = "",
): AuditEntry {
  const entry: AuditEntry = {
    time: new Date().toISOString(),
    event,
    lock,
    mode,
    connectionId: session.id,
    peer: session.peer,
  };
  if (token !== 0) entry.token = token;
  if (code !== "") entry.code = code;
  if (session.label !== undefined) entry.label = session.label;
  return entry;
}
