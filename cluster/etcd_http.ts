/**
 * One POST to etcd's JSON gateway, with its auth token and TLS client, and
 * the bound that ends it.
 *
 * @module
 */

import { LinkedAbort } from "./linked_abort.ts";
import type { GatewayJson } from "./etcd_codec.ts";

/** What {@linkcode postJson} sends besides the body. */
export interface PostOptions {
  /** The auth token, sent as the `Authorization` header. */
  token?: string | undefined;
  /** The HTTP client of the TLS setting; the default one without. */
  http?: Deno.HttpClient | undefined;
  /** Abandons the request. */
  signal: AbortSignal;
}

/**
 * POSTs JSON text.
 *
 * @param url The gateway URL.
 * @param json The request's JSON text.
 * @param options The token, the TLS client, the signal.
 * @returns The response.
 */
export function postJson(
  url: string,
  json: string,
  options: PostOptions,
): Promise<Response> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
  };
  if (options.token !== undefined) headers.authorization = options.token;
  const init: RequestInit & { client?: Deno.HttpClient } = {
    method: "POST",
    headers,
    body: json,
    signal: options.signal,
  };
  if (options.http !== undefined) init.client = options.http;
  return fetch(url, init);
}

/**
 * Runs `run` with a signal that aborts after `ms`, or when `signal` does; the
 * timer is cleared as soon as `run` settles.
 *
 * @param ms The bound, in milliseconds.
 * @param signal Aborts earlier.
 * @param run What to bound.
 * @returns What `run` returns.
 */
export async function withTimeout<T>(
  ms: number,
  signal: AbortSignal | undefined,
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  using bounded = new LinkedAbort(signal);
  const timer = setTimeout(
    () =>
      bounded.abort(
        new DOMException(`Timed out after ${ms} ms`, "TimeoutError"),
      ),
    ms,
  );
  try {
    return await run(bounded.signal);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A response's JSON body, or an abort: the body is cancelled by hand, as
 * aborting the fetch's signal did not always end a pending body read here.
 *
 * @param response The response.
 * @param signal Abandons the read.
 * @returns The JSON.
 */
export async function readJson(
  response: Response,
  signal: AbortSignal,
): Promise<GatewayJson> {
  const cancel = () =>
    void response.body?.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", cancel, { once: true });
  try {
    const answer = await response.json();
    signal.throwIfAborted();
    return answer;
  } finally {
    signal.removeEventListener("abort", cancel);
  }
}

/**
 * Why a request failed, for people: `fetch`'s "fetch failed" says nothing
 * without its cause (a refused connection, a certificate etcd refused).
 *
 * @param error What the request threw.
 * @returns Its message, and its cause's.
 */
export function reasonOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  return cause instanceof Error
    ? `${error.message}: ${cause.message}`
    : error.message;
}
