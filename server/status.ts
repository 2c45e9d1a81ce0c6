/**
 * The `status` report: every lock with its holders and waiters, the server's
 * version and uptime, and its connection counts.
 *
 * @module
 */

import type {
  StatusEntry,
  StatusLock,
  StatusResult,
} from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import type { Timing } from "./journal.ts";
import type { LockAsk, LockRequest, LockSpace } from "./lock_space.ts";
import type { Session } from "./session.ts";

/** What the report reads besides the locks. */
export interface StatusSources {
  /** When the server started (ms since the epoch). */
  startedAt: number;
  /** Connections open now. */
  current: number;
  /** Connections accepted since start-up. */
  total: number;
}

/**
 * Builds the `status` report.
 *
 * @param space Where the locks are.
 * @param sources Start time and connection counts.
 * @returns What the `status` request answers.
 */
export function statusReport(
  space: LockSpace<LockAsk & Timing>,
  sources: StatusSources,
): StatusResult {
  const locks: StatusLock[] = [];
  for (const name of [...space.names()].sort()) {
    const state = space.inspect(name)!;
    const lock: StatusLock = {
      name,
      mode: state.mode,
      holders: state.holders.map(describe),
      waiters: state.waiters.map(describe),
    };
    if (state.limit !== Infinity) lock.limit = state.limit;
    locks.push(lock);
  }
  const now = Date.now();
  return {
    status: "ok",
    server: {
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      startedAt: new Date(sources.startedAt).toISOString(),
      uptime: (now - sources.startedAt) / 1000,
    },
    connections: { current: sources.current, total: sources.total },
    locks,
  };
}

/**
 * A holder or waiter, as `status` and `forceRelease` report it.
 *
 * @param request The request.
 * @returns Its entry.
 */
export function describe(request: LockRequest<Session, Timing>): StatusEntry {
  const ticket = request.ticket;
  const described: StatusEntry = {
    connectionId: request.owner.id,
    peer: request.owner.peer,
    mode: request.mode,
    since: new Date(request.held ? ticket.granted : ticket.asked)
      .toISOString(),
  };
  const label = request.owner.label;
  if (label !== undefined) described.label = label;
  if (request.held) described.token = request.token;
  return described;
}
