/**
 * The errors etcd answers, typed by their gRPC status code.
 *
 * @module
 */

import { PklockError } from "../protocol/errors.ts";
import type { GatewayJson } from "./etcd_codec.ts";

/** etcd's gRPC status of an endpoint that cannot answer now. */
export const UNAVAILABLE = 14;
const RESOURCE_EXHAUSTED = 8;

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

/** No endpoint answered within the call's retry budget. */
export class EtcdUnavailableError extends EtcdError {
  /** Always `"EtcdUnavailableError"`. */
  override name = "EtcdUnavailableError";
}

/**
 * The typed error of a gateway error answer.
 *
 * @param path The request's path.
 * @param answer The answer's JSON (`{error, message, code}`).
 * @param status The HTTP status.
 * @returns The error.
 */
export function etcdError(
  path: string,
  answer: GatewayJson,
  status: number,
): EtcdError {
  const text = String(answer?.message ?? answer?.error ?? `HTTP ${status}`);
  const code = Number(answer?.code ?? (status === 503 ? UNAVAILABLE : 2));
  const message = `Cannot call etcd "${path}": ${text}`;
  if (code === RESOURCE_EXHAUSTED && text.includes("space exceeded")) {
    return new EtcdNoSpaceError(message, code);
  }
  return new EtcdError(message, code);
}
