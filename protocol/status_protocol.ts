/**
 * The `status` command on the wire: its parameters and their validation, and
 * the pages of the report it answers with. Shared by the server, which pages
 * the report, and the client, which reads it.
 *
 * @module
 */

import type { LockMode, ParameterError } from "./lock_protocol.ts";

/** A holder or waiter, as `status` reports it. */
export interface StatusEntry {
  /** The server's id of the connection that asked. */
  connectionId: number;
  /** The peer's address and port. */
  peer: string;
  /** The mode asked for. */
  mode: LockMode;
  /** When the lock was granted (holders) or asked for (waiters), ISO 8601. */
  since: string;
  /**
   * Seconds since then, by the server's clock (millisecond precision): how
   * long it has held, or waited.
   */
  elapsed: number;
  /**
   * The fencing token of the grant (holders only). In a cluster, absent for a
   * holder of another node granted before this node last listed the lock
   * space, when no write recorded its token.
   */
  token?: number;
  /** The label the client gave in `hello`, if any. */
  label?: string;
  /** In a cluster: the node the client is connected to. */
  node?: string;
}

/** One lock, as `status` reports it. */
export interface StatusLock {
  /** The lock's name. */
  name: string;
  /** The holders' mode. */
  mode: LockMode;
  /** The most shared holders at once, when its shared requests set one. */
  limit?: number;
  /** Current holders, in grant order. */
  holders: StatusEntry[];
  /** Waiters, first in line first. */
  waiters: StatusEntry[];
  /**
   * `true` when the page ended inside this lock: the next page starts with
   * the same lock and the rest of its holders and waiters.
   */
  more?: true;
}

/** The most locks a `status` request may ask to list. */
export const MAX_STATUS_LIMIT = 1_000_000_000;

/** The longest `pattern` of a `status` request, in characters. */
export const MAX_STATUS_PATTERN_LENGTH = 1024;

/** The `parameters` of a `status` request; every one is optional. */
export interface StatusParameters {
  /**
   * List only the locks whose name matches this pattern: `*` matches any run
   * of characters, `?` any one, everything else itself.
   *
   * @default {Every lock}
   */
  pattern?: string;
  /**
   * List at most this many locks; the totals still count every match.
   *
   * @default {No limit}
   */
  limit?: number;
  /**
   * Continue the report: the `next` of the page before. The pattern and the
   * limit are those of the request that started the report.
   */
  cursor?: string;
}

/** What the last page of a report counts: every matching lock. */
export interface StatusTotals {
  /** Locks that match the pattern, listed or not. */
  locks: number;
  /** Their holders. */
  holders: number;
  /** Their waiters. */
  waiters: number;
}

/** The `result` of a `status` request: one page of the report. */
export interface StatusResult {
  /** Always `ok`. */
  status: "ok";
  /** The server itself. */
  server: {
    /** The server's version. */
    version: string;
    /** The protocol version it speaks. */
    protocol: number;
    /** When it started, ISO 8601. */
    startedAt: string;
    /** Seconds since it started. */
    uptime: number;
  };
  /** Connection counts. */
  connections: {
    /** Open now. */
    current: number;
    /** Accepted since start-up. */
    total: number;
  };
  /**
   * Locks held or waited for, on this page: in the server's order (the
   * longest held or waited for first), the client library sorts them by name.
   */
  locks: StatusLock[];
  /** Present when more pages follow: send it as `cursor` for the next one. */
  next?: string;
  /** On the last page (no `next`): what the whole report counted. */
  totals?: StatusTotals;
  /** In a cluster: the node that answered, and every live node. */
  cluster?: { node: string; nodes: string[] };
}

/**
 * Checks the `parameters` of a `status` request.
 *
 * @param value The `parameters` received (absent is fine).
 * @returns The parameters, or why they are invalid.
 */
export function parseStatusParameters(
  value: unknown,
): StatusParameters | ParameterError {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return invalid('"parameters" must be an object');
  }
  const { pattern, limit, cursor } = value as Record<string, unknown>;
  const parameters: StatusParameters = {};
  if (cursor !== undefined) {
    if (typeof cursor !== "string") {
      return invalid('"cursor" must be the "next" of the page before');
    }
    parameters.cursor = cursor;
  }
  if (pattern !== undefined) {
    if (
      typeof pattern !== "string" || pattern.length === 0 ||
      pattern.length > MAX_STATUS_PATTERN_LENGTH
    ) {
      return invalid(
        `"pattern" must be a string of 1 to ${MAX_STATUS_PATTERN_LENGTH} characters`,
      );
    }
    parameters.pattern = pattern;
  }
  if (limit !== undefined) {
    if (
      typeof limit !== "number" || !Number.isInteger(limit) || limit < 0 ||
      limit > MAX_STATUS_LIMIT
    ) {
      return invalid(
        `"limit" must be an integer from 0 to ${MAX_STATUS_LIMIT}`,
      );
    }
    parameters.limit = limit;
  }
  return parameters;
}

function invalid(message: string): ParameterError {
  return { code: "invalid_parameters", message };
}
