/**
 * The pklock message layer: persistent TCP (or TLS) connections carrying
 * length-prefixed JSON messages, with RPC ids, events, an IP allow-list,
 * connection limits, heartbeats and one writer per connection. The pklock lock
 * server is one application of it; build your own persistent-socket services
 * on {@linkcode MessageServer} and {@linkcode MessageClient}. It uses only Deno
 * and Web APIs, so it can be imported by URL.
 *
 * @example A service that answers one command
 * ```ts ignore
 * import { MessageClient, MessageServer } from "./mod.ts";
 *
 * await using server = new MessageServer({
 *   port: 0,
 *   handlers: { echo: (message) => message.parameters },
 * });
 * await using client = await MessageClient.connect({ port: server.addr.port });
 * console.log(await client.rpc("echo", { hello: "world" }));
 * ```
 *
 * @module
 */

export {
  MessageClient,
  type MessageClientOptions,
  type RpcOptions,
} from "./client.ts";
export { HEARTBEAT, HEARTBEAT_TIMEOUT, MessageServer } from "./server.ts";
export type {
  CloseOptions,
  Handler,
  MessageServerOptions,
  MessageServerSettings,
} from "./server_options.ts";
export type { RejectReason } from "./admission.ts";
export { Connection } from "./connection.ts";
export {
  type CloseInfo,
  type CloseReason,
  type CodedError,
  type ConnectionEvents,
  type ConnectionLimits,
  type ConnectionOptions,
  type ReplyErrorOptions,
} from "./connection_types.ts";
export { OutputBudget } from "./output_budget.ts";
export * from "./errors.ts";
export { FrameError, PklockError } from "../protocol/errors.ts";
export type { ErrorCode } from "../protocol/errors.ts";
export type { Message } from "../protocol/frame.ts";
