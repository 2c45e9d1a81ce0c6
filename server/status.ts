/**
 * The `status` report: the locks with their holders and waiters, the server's
 * version and uptime, and its connection counts, sent in pages.
 *
 * A report costs the server a bounded amount per request, however many locks
 * there are: each page visits at most {@linkcode SCAN_UNITS} names and holds at
 * most {@linkcode PAGE_BYTES} of JSON, so other clients are served between two
 * pages. A connection has at most one report in progress (a new one replaces
 * it), and it costs nothing between pages but a place in the lock table's
 * order: a report idle for {@linkcode IDLE_MS} is dropped, because an
 * unfinished walk of a `Map` keeps the table's old storage alive. A peer with
 * more than two pages of replies unread is refused (`limit_exceeded`) until it
 * reads, so asking and never reading pins one page at most. The walk of one
 * report is status_scan.ts.
 *
 * @module
 */

import { DEFAULT_MAX_OUTPUT_BYTES } from "../message/connection_types.ts";
import { MessageError } from "../message/errors.ts";
import type { Message } from "../protocol/frame.ts";
import {
  parseStatusParameters,
  type StatusLock,
  type StatusResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import { globMatcher } from "./glob.ts";
import type { ClusterView } from "./lock_space.ts";
import type { Session } from "./session.ts";
import { StatusScan, type StatusSpace } from "./status_scan.ts";

export { describe, StatusScan } from "./status_scan.ts";

/** The most bytes of JSON in one page: half the client's frame limit. */
export const PAGE_BYTES = 32 * 1024;
/** The most work in one page, in names visited (long names count more). */
export const SCAN_UNITS = 2_000;
/** How long a report may wait for its next page before it is dropped, in ms. */
export const IDLE_MS = 2_000;

/** What the report reads besides the locks. */
export interface StatusSources {
  /** When the server started (ms since the epoch). */
  startedAt: number;
  /** Connections open now, and accepted since start-up. */
  connections(): { current: number; total: number };
  /** In a cluster: this node and the live nodes. */
  cluster?: (() => ClusterView) | undefined;
}

/** The bounds of one page and of a report's idle time. */
export interface StatusBounds {
  /**
   * The most bytes of JSON in one page.
   *
   * @default {PAGE_BYTES}
   */
  pageBytes?: number | undefined;
  /**
   * How long a report may wait for its next page, in milliseconds.
   *
   * @default {IDLE_MS}
   */
  idleMs?: number | undefined;
  /**
   * The connections' output cap: a page is at most a quarter of it, so two
   * pages unread and the next one never reach it.
   *
   * @default {4194304}
   */
  maxOutputBytes?: number | undefined;
}

/** Answers `status` requests, one report in progress per connection. */
export class StatusReports {
  readonly #space: StatusSpace;
  readonly #sources: StatusSources;
  readonly #pageBytes: number;
  readonly #idleMs: number;
  #reports = 0;

  /**
   * Creates the handler.
   *
   * @param space Where the locks are.
   * @param sources Start time and connection counts.
   * @param bounds The page size and idle time, when not the defaults.
   */
  constructor(
    space: StatusSpace,
    sources: StatusSources,
    bounds: StatusBounds = {},
  ) {
    this.#space = space;
    this.#sources = sources;
    this.#pageBytes = Math.min(
      bounds.pageBytes ?? PAGE_BYTES,
      Math.floor((bounds.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES) / 4),
    );
    this.#idleMs = bounds.idleMs ?? IDLE_MS;
  }

  /**
   * `status`: starts a report (`pattern`, `limit`) or continues one
   * (`cursor`), and answers with its next page.
   *
   * @param message The request.
   * @param session Its sender.
   * @returns The page, or `undefined` for a request without an id.
   * @throws {MessageError} `invalid_parameters`, or `limit_exceeded` while
   *   the connection has too much output unread.
   */
  answer(message: Message, session: Session): StatusResult | undefined {
    if (message.id === undefined) return undefined;
    const parameters = parseStatusParameters(message.parameters);
    if ("code" in parameters) {
      throw new MessageError(parameters.code, parameters.message);
    }
    const unread = session.connection.pendingBytes;
    const maxUnread = 2 * this.#pageBytes;
    if (unread > maxUnread) {
      throw new MessageError(
        "limit_exceeded",
        `Cannot report status: ${unread} bytes of replies are unread, over the limit of ${maxUnread}`,
      );
    }
    let scan = session.statusScan;
    const { cursor, pattern, limit = Infinity } = parameters;
    if (cursor === undefined) {
      scan?.stop();
      const match = pattern === undefined ? undefined : globMatcher(pattern);
      scan = new StatusScan(
        this.#space,
        `${session.id}.${++this.#reports}`,
        match,
        limit,
      );
      session.statusScan = scan;
    } else if (scan === undefined || scan.cursor !== cursor) {
      throw new MessageError(
        "invalid_parameters",
        `Status cursor "${cursor}" is not the next page of this connection's report (used already, or the report ended, was replaced or waited over ${this.#idleMs} ms): ask again without "cursor"`,
      );
    }
    const page = this.#page(scan.page(this.#pageBytes, SCAN_UNITS));
    if (scan.done) {
      session.statusScan = undefined;
      page.totals = scan.totals;
    } else {
      scan.idle(this.#idleMs, () => {
        if (session.statusScan === scan) session.statusScan = undefined;
      });
      page.next = scan.cursor;
    }
    return page;
  }

  /**
   * The whole report at once, for the server's own API (not the network):
   * every lock, sorted by name.
   *
   * @returns The report.
   */
  whole(): StatusResult {
    const scan = new StatusScan(this.#space, "", undefined, Infinity);
    const page = this.#page(scan.page(Infinity, Infinity));
    page.locks.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    page.totals = scan.totals;
    return page;
  }

  #page(locks: StatusLock[]): StatusResult {
    const startedAt = this.#sources.startedAt;
    return {
      status: "ok",
      server: {
        version: VERSION,
        protocol: PROTOCOL_VERSION,
        startedAt: new Date(startedAt).toISOString(),
        uptime: (Date.now() - startedAt) / 1000,
      },
      connections: this.#sources.connections(),
      locks,
      ...(this.#sources.cluster ? { cluster: this.#sources.cluster() } : {}),
    };
  }
}
