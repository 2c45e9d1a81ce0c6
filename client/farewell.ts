/**
 * Why a connection ended, as far as the client can know: what the server
 * said before closing it (a `shutdown` or `forced_release` event, a refusal),
 * else the message layer's close reason.
 *
 * @module
 */

import type { CloseInfo } from "../message/connection_types.ts";
import { LockLostError, type LostReason } from "./errors.ts";

/** Error codes after which the server closes the connection. */
const CLOSING_CODES: ReadonlySet<string> = new Set([
  "auth_required",
  "auth_failed",
  "too_many_connections",
]);

/** The messages without an id that tell why the server will close. */
export type FarewellMessage =
  | { event: "shutdown" }
  | { event: "heartbeat_timeout" }
  | { event: "forced_release"; lockName: string }
  | { event?: undefined; error?: { code?: unknown } };

/**
 * Remembers the first reason the server gave for closing the connection.
 *
 * @example Explaining a loss
 * ```ts
 * import { Farewell } from "./farewell.ts";
 * const farewell = new Farewell();
 * farewell.heard({ event: "shutdown" });
 * const error = farewell.lost("x", { reason: "peer_closed" });
 * console.assert(error.reason === "shutdown");
 * ```
 */
export class Farewell {
  #said: { reason: LostReason; why: string } | undefined;
  /** The lock whose forced release closes the connection, if any. */
  #forced: string | undefined;

  /**
   * Notes a message that announces a close; ignores any other.
   *
   * @param message An unsolicited message from the server.
   * @returns Whether the message was a farewell.
   */
  heard(message: FarewellMessage): boolean {
    if (message.event === "shutdown") {
      this.#say("shutdown", "the server is shutting down");
    } else if (message.event === "heartbeat_timeout") {
      this.#say(
        "heartbeat_timeout",
        "the server heard nothing from this client for its heartbeat timeout",
      );
    } else if (message.event === "forced_release") {
      this.#say(
        "forced_release",
        `an operator forced the release of lock "${message.lockName}"`,
      );
      this.#forced ??= message.lockName;
    } else if (message.event === undefined && message.error !== undefined) {
      // An error with no id: a refusal or a bad frame; the server closes.
      const code = String(message.error.code);
      if (CLOSING_CODES.has(code)) this.refused(code);
      else this.#say("protocol_error", `the server reported error "${code}"`);
    } else {
      return false;
    }
    return true;
  }

  /**
   * Notes an error code from a reply; codes after which the server closes
   * the connection explain the close.
   *
   * @param code The error reply's code.
   */
  refused(code: string): void {
    if (CLOSING_CODES.has(code)) {
      this.#say("refused", `the server refused this connection (${code})`);
    }
  }

  /**
   * The error a lock's `lost` signal carries.
   *
   * @param name The lock's name.
   * @param info How the connection closed.
   * @param cause The message layer's error, if any.
   * @returns The error, with the server's reason when it gave one.
   */
  lost(name: string, info: CloseInfo, cause?: unknown): LockLostError {
    const { reason, why } = this.#said ?? unexplained(info.reason);
    if (reason === "forced_release" && name === this.#forced) {
      return new LockLostError(
        `Lost lock "${name}": an operator forced its release`,
        reason,
        { cause },
      );
    }
    return new LockLostError(`Lost lock "${name}": ${why}`, reason, { cause });
  }

  /**
   * Whether the server said it forced the release of `name`.
   *
   * @param name The lock's name.
   * @returns `true` once its `forced_release` event was heard.
   */
  forced(name: string): boolean {
    return this.#forced === name;
  }

  /**
   * The error of a release the server answered `notFound` while the client
   * held the lock: the server had dropped the hold, the connection still
   * open.
   *
   * @param name The lock's name.
   * @returns The error, with the server's reason when it gave one.
   */
  notHeld(name: string): LockLostError {
    if (this.#said !== undefined) {
      return this.lost(name, { reason: "peer_closed" });
    }
    return new LockLostError(
      `Lost lock "${name}": the server no longer held it when it was released`,
      "not_held",
    );
  }

  #say(reason: LostReason, why: string): void {
    this.#said ??= { reason, why };
  }
}

/** A close the server did not explain, from the message layer's reason. */
function unexplained(
  reason: CloseInfo["reason"],
): { reason: LostReason; why: string } {
  switch (reason) {
    case "closed":
      return { reason, why: "the client was closed" };
    case "io_error":
      return { reason, why: "the connection failed" };
    case "protocol_error":
      return { reason, why: "the server sent a frame this client cannot read" };
    case "output_overflow":
      return { reason, why: "the server stopped reading" };
    default:
      // The server died, or its farewell was not read.
      return { reason: "peer_closed", why: "the server closed the connection" };
  }
}
