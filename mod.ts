/**
 * pklock: a network replacement for `flock()`. A client opens one persistent
 * TCP connection to a pklock server and holds named locks for as long as it
 * likes: there are no lease timeouts. A lock is released when its holder
 * releases it or when the holder's connection dies.
 *
 * This module is the client library and the lock protocol's types. The
 * message layer the lock server is built on, for persistent-socket
 * applications of your own, has an entry of its own: `message/mod.ts`
 * (`@pklock/pklock/message`). It uses only Deno and Web APIs, so it can be
 * imported by URL.
 *
 * @example Holding a lock for the length of a block
 * ```ts ignore
 * import { connect } from "./mod.ts";
 *
 * await using client = await connect({ hostname: "127.0.0.1", port: 20934 });
 * await using lock = await client.lock("nightly-report", { wait: 30_000 });
 * lock.lost.addEventListener("abort", () => console.error("lock lost!"));
 * console.log(`holding "${lock.name}" with fencing token ${lock.token}`);
 * ```
 *
 * @module
 */

export { connect, LockClient } from "./client/client.ts";
export type {
  ConnectOptions,
  LockOptions,
  ServerAddress,
} from "./client/options.ts";
export type { StatusOptions } from "./client/status_report.ts";
export { Lock, type LockEventMap } from "./client/lock.ts";
export {
  LockLostError,
  LockTimeoutError,
  type LostReason,
  RequestRefusedError,
} from "./client/errors.ts";
export {
  ConnectionError,
  ProtocolError,
  RemoteError,
  RequestTimeoutError,
} from "./message/errors.ts";
export type { CloseInfo, CloseReason } from "./message/connection_types.ts";
export { FrameError, PklockError } from "./protocol/errors.ts";
export type { ErrorCode } from "./protocol/errors.ts";
export type { Message } from "./protocol/frame.ts";
export { DEFAULT_PORT } from "./protocol/lock_protocol.ts";
export type * from "./protocol/lock_protocol.ts";
