/**
 * The options of {@linkcode LockServer}: the message layer's settings and the
 * lock server's own, declared once.
 *
 * @module
 */

import type { MessageServerSettings } from "../message/server_options.ts";
import type { AuditLog } from "./audit.ts";
import type { HoldAlarmSettings } from "./hold_alarms.ts";
import type { Timing } from "./journal.ts";
import type {
  LockSpace,
  LockSpaceEvents,
  SharedLockSpace,
} from "./lock_space.ts";
import type { Ticket } from "./outcomes.ts";

export type { HoldAlarmSettings };

/**
 * Options of {@linkcode LockServer}: the message layer's settings (address,
 * allow-list, TLS, frame and output limits, connection limits, heartbeats),
 * and the lock server's own.
 */
export interface LockServerOptions extends MessageServerSettings {
  /**
   * The port to listen on; 0 picks a free one.
   *
   * @default {20934}
   */
  port?: number | undefined;
  /**
   * The longest lock name, in characters.
   *
   * @default {256}
   */
  maxLockNameLength?: number | undefined;
  /**
   * The most locks one connection may hold or wait for at once.
   *
   * @default {Infinity}
   */
  maxLocksPerConnection?: number | undefined;
  /**
   * The most requests the server holds and queues at once, in all; past it,
   * `lock` is refused with `limit_exceeded` and everyone else carries on.
   *
   * @default {Half the V8 heap limit at 1 KiB a request}
   */
  maxRequests?: number | undefined;
  /**
   * The most requests the connections of one IP address hold and queue at
   * once.
   *
   * @default {Half of the derived `maxRequests`, at most `maxRequests`}
   */
  maxRequestsPerIp?: number | undefined;
  /**
   * A shared secret every connection must give in `hello` before anything
   * else; compared in constant time, never logged.
   */
  secret?: string | undefined;
  /**
   * With `secret`, how long a connection may take to authenticate before it
   * is closed, in milliseconds.
   *
   * @default {10000}
   */
  authDeadline?: number | undefined;
  /**
   * A second secret that allows `forceRelease`; without it, forced release
   * is refused.
   */
  adminSecret?: string | undefined;
  /** Serve Prometheus metrics; `lockPatterns` get per-lock series. */
  metrics?: { lockPatterns?: string[] | undefined } | undefined;
  /** Hold-time alarms: warnings and holder events, never expiry. */
  alarms?: HoldAlarmSettings | undefined;
  /** Where grants, releases, timeouts and refusals are recorded. */
  audit?: AuditLog | undefined;
  /**
   * Issues fencing tokens; must strictly increase. The `serve` command passes
   * a {@linkcode TokenStore}, which keeps them increasing across restarts. It
   * throws when no token can be had now (a full disk): a waiter whose turn
   * comes then stays first in line until {@linkcode LockServer.resumeGrants}.
   *
   * @default {A counter starting at 1}
   */
  nextToken?: (() => number) | undefined;
  /**
   * How many tokens `nextToken` can still issue if no new reservation
   * succeeds (`Infinity` while reservations succeed). While it does not
   * exceed the requests waiting, new `lock` requests are refused with
   * `tokens_unavailable`, so that every waiter and holder is still served.
   *
   * @default {() => Infinity}
   */
  tokensLeft?: (() => number) | undefined;
  /**
   * Makes the lock space, reporting to `events`: a cluster node passes its
   * shared space here; `nextToken` and `tokensLeft` then go unused.
   *
   * @default {A LocalLockSpace on `nextToken`}
   */
  lockSpace?:
    | ((events: LockSpaceEvents<Ticket>) => LockSpace<Ticket> | ClusterSpace)
    | undefined;
}

/** A lock space shared by the nodes of a cluster. */
export type ClusterSpace = SharedLockSpace<Ticket, Timing>;
