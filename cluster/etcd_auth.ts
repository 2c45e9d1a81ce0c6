/**
 * etcd's authentication: a user name and password are exchanged for a token
 * (the `Auth.Authenticate` call), sent as the `token` metadata of every call,
 * watches included. etcd forgets a token after `--auth-token-ttl` seconds
 * unused (simple tokens) or at its expiry (JWT) and then answers "invalid auth
 * token" (gRPC 16): the client forgets it, authenticates again and repeats the
 * request once.
 *
 * And the TLS of `https://` endpoints: a private CA and a client certificate
 * for members run with `--client-cert-auth`.
 *
 * @module
 */

import type { SecureClientSessionOptions } from "node:http2";

/** A user of etcd's authentication. */
export interface EtcdCredentials {
  /** The etcd user name. */
  user: string;
  /** Its password. */
  password: string;
  /** Told each time etcd issues a token (at the first request, after expiry). */
  onToken?: ((user: string) => void) | undefined;
}

/** TLS towards `https://` endpoints. */
export interface EtcdTls {
  /**
   * CA certificates (PEM) trusted besides the system's, for members whose
   * certificates a private CA signed.
   *
   * @default {[]}
   */
  caCerts?: string[] | undefined;
  /** The client certificate chain (PEM), for `--client-cert-auth`; with `key`. */
  cert?: string | undefined;
  /** The client certificate's private key (PEM); with `cert`. */
  key?: string | undefined;
}

/**
 * The TLS options of the HTTP/2 connections to `https://` endpoints.
 *
 * TLS 1.2 at most: under Deno 2.9.6 a TLS 1.3 connection whose client
 * certificate the member refuses (the refusal comes after the handshake, in
 * 1.3) spins at full CPU and never fails; in 1.2 the handshake itself fails.
 * Deno's `node:tls` takes `ca` as its own TLS's `caCerts`: trusted besides
 * the default store, not instead of it.
 *
 * @param tls The setting.
 * @returns The options.
 * @throws {TypeError} When only one of `cert` and `key` is given.
 */
export function tlsOptions(
  tls: EtcdTls | undefined,
): SecureClientSessionOptions {
  const options: SecureClientSessionOptions = { maxVersion: "TLSv1.2" };
  if (tls === undefined) return options;
  const { caCerts = [], cert, key } = tls;
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError(
      "Cannot use an etcd client certificate: give both its certificate and its key",
    );
  }
  if (caCerts.length > 0) options.ca = caCerts;
  if (cert !== undefined && key !== undefined) {
    options.cert = cert;
    options.key = key;
  }
  return options;
}

/** An authentication's request and answer. */
export type Authenticate = (
  request: { name: string; password: string },
) => Promise<{ token: string }>;

/**
 * The token of one set of credentials: fetched when first needed, shared by
 * every request until etcd refuses it.
 *
 * @example Sending the token
 * ```ts ignore
 * const tokens = new EtcdTokens(credentials, (request) => etcd.call(Auth.method.authenticate, request));
 * const token = await tokens.get(signal);
 * ```
 */
export class EtcdTokens {
  /** The etcd user name. */
  readonly user: string;
  readonly #password: string;
  readonly #authenticate: Authenticate;
  readonly #onToken: ((user: string) => void) | undefined;
  #pending: Promise<string> | null = null;
  #current: string | null = null;
  #count = 0;

  /**
   * @param credentials The user and password.
   * @param authenticate Calls `Auth.Authenticate` without a token, with the
   *   client's failover and retry budget.
   */
  constructor(credentials: EtcdCredentials, authenticate: Authenticate) {
    this.user = credentials.user;
    this.#password = credentials.password;
    this.#authenticate = authenticate;
    this.#onToken = credentials.onToken;
  }

  /** How many tokens etcd has issued to this client so far. */
  get authentications(): number {
    return this.#count;
  }

  /**
   * The token to send, authenticating first when there is none. Callers
   * asking at once share one authentication; each waits at most until its
   * own `signal` aborts.
   *
   * @param signal Stops this caller's wait.
   * @returns The token.
   * @throws {EtcdAuthError} When etcd refuses the user or password.
   * @throws {EtcdError} When etcd cannot be reached.
   */
  async get(signal?: AbortSignal): Promise<string> {
    if (this.#pending === null) {
      this.#pending = this.#fetch();
      // Shared: a failure is each caller's to see, never unhandled.
      this.#pending.catch(() => {});
    }
    return await untilAborted(this.#pending, signal);
  }

  /**
   * Forgets a token etcd refused, so the next {@linkcode EtcdTokens.get}
   * authenticates again, unless a newer token already replaced it.
   *
   * @param token The refused token.
   */
  refused(token: string): void {
    if (this.#current === token) {
      this.#current = null;
      this.#pending = null;
    }
  }

  async #fetch(): Promise<string> {
    try {
      const { token } = await this.#authenticate({
        name: this.user,
        password: this.#password,
      });
      this.#current = token;
      this.#count++;
      this.#onToken?.(this.user);
      return token;
    } catch (error) {
      this.#pending = null;
      throw error;
    }
  }
}

/** `promise`, or the abort of `signal`, whichever comes first. */
async function untilAborted<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  if (signal === undefined) return await promise;
  signal.throwIfAborted();
  const aborted = Promise.withResolvers<never>();
  const abort = () => aborted.reject(signal.reason);
  signal.addEventListener("abort", abort, { once: true });
  try {
    return await Promise.race([promise, aborted.promise]);
  } finally {
    signal.removeEventListener("abort", abort);
  }
}
