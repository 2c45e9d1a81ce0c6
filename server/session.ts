/**
 * Sessions: the lock server's state of one connection (its label, whether it
 * has authenticated and by when it must, how it ended, what its death
 * released), created when the connection opens. A session owns the
 * connection's requests in the lock space, as PostgreSQL's LOCALLOCK belongs
 * to its backend and etcd's session stands apart from its mutexes.
 *
 * @module
 */

import type { Connection } from "../message/connection.ts";
import type { CloseReason } from "../message/connection_types.ts";
import type { StatusScan } from "./status.ts";

/** How many lock names the log line of a closed connection lists. */
export const MAX_LOGGED_NAMES = 10;

/** One connection's state in the lock server. */
export class Session {
  /** The message-layer connection. */
  readonly connection: Connection;
  /** The server's id of the connection. */
  readonly id: number;
  /** The label the client gave in `hello`. */
  label: string | undefined = undefined;
  /**
   * Whether the connection sent `hello`: one that never did is a legacy
   * (PHP pkLockClient) connection, answered as the 2012 server answered.
   */
  greeted = false;
  /** Whether the connection may send more than `hello`. */
  authenticated: boolean;
  /** Why the connection closed; `undefined` while it is open. */
  closeReason: CloseReason | undefined = undefined;
  /** The operator's session, once a forced release closes this one. */
  forcedBy: Session | undefined = undefined;
  /** How many holds the connection's end released. */
  releasedCount = 0;
  /** The first {@linkcode MAX_LOGGED_NAMES} of them, for the log line. */
  releasedNames: string[] | undefined = undefined;
  /** The connection's `status` report in progress, if any. */
  statusScan: StatusScan | undefined = undefined;
  #authTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Starts the session of a connection just opened.
   *
   * @param connection The connection.
   * @param authenticated `false` when the server wants a secret first.
   */
  constructor(connection: Connection, authenticated: boolean) {
    this.connection = connection;
    this.id = connection.id;
    this.authenticated = authenticated;
  }

  /** The peer's address and port, as logs, audit and status show it. */
  get peer(): string {
    return peerOf(this.connection.remoteAddr);
  }

  /**
   * Gives the connection `ms` to authenticate.
   *
   * @param ms The deadline, in milliseconds.
   * @param expired Called if it has not authenticated by then.
   */
  expectAuthentication(ms: number, expired: () => void): void {
    this.#authTimer = setTimeout(expired, ms);
  }

  /** The connection gave the right secret. */
  authenticate(): void {
    this.authenticated = true;
    clearTimeout(this.#authTimer);
  }

  /**
   * The connection closed.
   *
   * @param reason Why.
   */
  end(reason: CloseReason): void {
    this.closeReason = reason;
    clearTimeout(this.#authTimer);
    this.statusScan?.stop();
    this.statusScan = undefined;
  }

  /**
   * Counts a hold its end released, for the one log line of the close.
   *
   * @param name The lock.
   */
  releasedOnClose(name: string): void {
    this.releasedCount++;
    this.releasedNames ??= [];
    if (this.releasedNames.length < MAX_LOGGED_NAMES) {
      this.releasedNames.push(name);
    }
  }
}

/** The one session of each open connection. */
export class Sessions {
  readonly #sessions = new Map<Connection, Session>();
  #opened = 0;

  /** How many connections opened since the server started. */
  get opened(): number {
    return this.#opened;
  }

  /**
   * Starts the session of a connection.
   *
   * @param connection The new connection.
   * @param authenticated Whether it needs no secret.
   * @returns Its session.
   */
  open(connection: Connection, authenticated: boolean): Session {
    const session = new Session(connection, authenticated);
    this.#sessions.set(connection, session);
    this.#opened++;
    return session;
  }

  /**
   * The session of an open connection.
   *
   * @param connection A connection the server accepted.
   * @returns Its session.
   */
  of(connection: Connection): Session {
    return this.#sessions.get(connection)!;
  }

  /**
   * Ends the session of a connection that closed.
   *
   * @param connection The closed connection.
   * @param reason Why it closed.
   * @returns Its session, no longer listed.
   */
  close(connection: Connection, reason: CloseReason): Session {
    const session = this.of(connection);
    this.#sessions.delete(connection);
    session.end(reason);
    return session;
  }
}

/**
 * An address as logs show it: `host:port`, IPv6 in brackets.
 *
 * @param addr The address.
 * @returns Its text.
 */
export function peerOf(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
