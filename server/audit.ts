/**
 * The audit log: one JSON line per grant, release, disconnect release,
 * timeout, refusal and forced release. Lines are buffered and appended in
 * order, once per tick, so the lock server's hot path never waits for a disk.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { writeAll } from "../message/io.ts";
import type { LockMode } from "../protocol/lock_protocol.ts";
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

const encoder = new TextEncoder();

/** An append-only JSON-lines file. */
export class AuditLog {
  readonly #file: Deno.FsFile;
  #lines: string[] = [];
  #writing: Promise<void> = Promise.resolve();
  #scheduled = false;

  private constructor(file: Deno.FsFile) {
    this.#file = file;
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

  /**
   * Records one entry; it is written within the current tick's batch.
   *
   * @param entry What happened.
   */
  record(entry: AuditEntry): void {
    this.#lines.push(JSON.stringify(entry));
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /** Writes what is buffered and closes the file. */
  async close(): Promise<void> {
    this.#flush();
    await this.#writing;
    this.#file.close();
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#lines.length === 0) return;
    const bytes = encoder.encode(this.#lines.join("\n") + "\n");
    this.#lines = [];
    this.#writing = this.#writing.then(() => writeAll(this.#file, bytes)).catch(
      (error) => log.error("Cannot write the audit log: {error}", { error }),
    );
  }
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
