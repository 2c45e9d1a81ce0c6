/**
 * The errors etcd answers, typed by their gRPC status code.
 *
 * @module
 */

import { ConnectError } from "@connectrpc/connect";
import { PklockError } from "../protocol/errors.ts";

/** etcd's gRPC status of an endpoint that cannot answer now. */
export const UNAVAILABLE = 14;
/** etcd's gRPC status of a request whose auth token it does not know (expired). */
export const UNAUTHENTICATED = 16;
const INVALID_ARGUMENT = 3;
const RESOURCE_EXHAUSTED = 8;
/** The gRPC status names etcd writes in a watch's `cancel_reason`. */
const STATUS_NAMES: Record<string, number> = {
  InvalidArgument: INVALID_ARGUMENT,
  PermissionDenied: 7,
  ResourceExhausted: RESOURCE_EXHAUSTED,
  Unavailable: UNAVAILABLE,
  Unauthenticated: UNAUTHENTICATED,
};

/** An error etcd answered, with its gRPC status code. */
export class EtcdError extends PklockError {
  /** Always `"EtcdError"`. */
  override name = "EtcdError";
  /** The gRPC status code (5: not found, 8: resource exhausted, 14: unavailable). */
  readonly code: number;

  /**
   * @param message What failed.
   * @param code The gRPC status code.
   * @param options The cause.
   */
  constructor(message: string, code: number, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** etcd's space quota is exhausted (the NOSPACE alarm): it refuses every write. */
export class EtcdNoSpaceError extends EtcdError {
  /** Always `"EtcdNoSpaceError"`. */
  override name = "EtcdNoSpaceError";
}

/**
 * etcd refused the user name or password (or, with auth on, their absence):
 * trying again cannot help until the settings change.
 */
export class EtcdAuthError extends EtcdError {
  /** Always `"EtcdAuthError"`. */
  override name = "EtcdAuthError";
}

/** No endpoint answered within the call's retry budget. */
export class EtcdUnavailableError extends EtcdError {
  /** Always `"EtcdUnavailableError"`. */
  override name = "EtcdUnavailableError";
}

/**
 * The typed error of a failed call: etcd's gRPC status, or the transport's
 * own (a refused connection, a timeout) as Connect reports it.
 *
 * @param method The call (`KV.Range`).
 * @param error What the call threw.
 * @returns The error, with `error` as its cause.
 */
export function etcdError(method: string, error: unknown): EtcdError {
  const failed = ConnectError.from(error);
  return typed(method, failed.rawMessage, failed.code, failed);
}

/**
 * The typed error of a watch etcd cancelled, from its `cancel_reason`
 * (`rpc error: code = Unauthenticated desc = etcdserver: invalid auth token`).
 *
 * @param reason The reason etcd gave.
 * @returns The error.
 */
export function watchCancelled(reason: string): EtcdError {
  const status = /code = (\w+) desc = (.*)$/s.exec(reason);
  const code = status ? STATUS_NAMES[status[1]!] ?? 2 : 1;
  return typed("Watch", `cancelled: ${status?.[2] ?? reason}`, code);
}

function typed(
  method: string,
  text: string,
  code: number,
  cause?: unknown,
): EtcdError {
  const message = `Cannot call etcd "${method}": ${text}`;
  const options = cause === undefined ? undefined : { cause };
  if (code === RESOURCE_EXHAUSTED && text.includes("space exceeded")) {
    return new EtcdNoSpaceError(
      `etcd is out of space (its NOSPACE alarm is raised: compact, defragment, then disarm it); ${message}`,
      code,
      options,
    );
  }
  if (
    code === INVALID_ARGUMENT &&
    /authentication failed|user name is empty/.test(text)
  ) {
    return new EtcdAuthError(message, code, options);
  }
  // A request past the member's gRPC limit (`--max-request-bytes` plus
  // 512 KiB) is as invalid as one past `--max-request-bytes` itself, which
  // etcd refuses with INVALID_ARGUMENT "request is too large".
  if (code === RESOURCE_EXHAUSTED && text.includes("larger than max")) {
    return new EtcdError(message, INVALID_ARGUMENT, options);
  }
  return new EtcdError(message, code, options);
}
