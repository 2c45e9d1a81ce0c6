/**
 * etcd's authentication through the JSON gateway: a user name and password
 * are exchanged for a token (`POST /v3/auth/authenticate`), sent as the
 * `Authorization` header of every request, watches included. etcd forgets a
 * token after `--auth-token-ttl` seconds unused (simple tokens) or at its
 * expiry (JWT) and then answers "invalid auth token" (gRPC 16): the client
 * forgets it, authenticates again and repeats the request once.
 *
 * And the TLS of `https://` endpoints: a private CA and a client certificate
 * for members run with `--client-cert-auth`.
 *
 * @module
 */

import type { GatewayJson } from "./etcd_codec.ts";

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
 * The HTTP client of a TLS setting, or `undefined` when the default one
 * (the system's CAs, no client certificate) does.
 *
 * @param tls The setting.
 * @returns The client; the caller closes it.
 * @throws {TypeError} When only one of `cert` and `key` is given, or Deno
 *   cannot read them.
 */
export function tlsClient(
  tls: EtcdTls | undefined,
): Deno.HttpClient | undefined {
  if (tls === undefined) return undefined;
  const { caCerts = [], cert, key } = tls;
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError(
      "Cannot use an etcd client certificate: give both its certificate and its key",
    );
  }
  if (cert !== undefined && key !== undefined) {
    return Deno.createHttpClient({ caCerts, cert, key });
  }
  return caCerts.length > 0 ? Deno.createHttpClient({ caCerts }) : undefined;
}

/**
 * The token of one set of credentials: fetched when first needed, shared by
 * every request until etcd refuses it.
 *
 * @example Sending the token
 * ```ts ignore
 * const tokens = new EtcdTokens(credentials, (body) => post("/v3/auth/authenticate", body));
 * const token = await tokens.get(signal);
 * await fetch(url, { headers: { authorization: token } });
 * ```
 */
export class EtcdTokens {
  /** The etcd user name. */
  readonly user: string;
  readonly #password: string;
  readonly #authenticate: (body: unknown) => Promise<GatewayJson>;
  readonly #onToken: ((user: string) => void) | undefined;
  #pending: Promise<string> | null = null;
  #current: string | null = null;
  #count = 0;

  /**
   * @param credentials The user and password.
   * @param authenticate POSTs `/v3/auth/authenticate` without a token, with
   *   the client's failover and retry budget.
   */
  constructor(
    credentials: EtcdCredentials,
    authenticate: (body: unknown) => Promise<GatewayJson>,
  ) {
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
      const body = await this.#authenticate({
        name: this.user,
        password: this.#password,
      });
      const token = String(body.token ?? "");
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
