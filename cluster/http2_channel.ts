/**
 * One HTTP/2 connection to one etcd member: opened when a stream is first
 * asked for, and opened again for the next stream once it has failed,
 * closed or been told to go away (its open streams finish on it).
 *
 * Its listeners are on it from the moment it exists. Connect's session
 * manager, used before, left the new connection without an `error`
 * listener between its `connect` event and the state that follows, and an
 * error there (a member, or anything on its port, that accepts the
 * connection and closes it at once: `write EPIPE`) was uncaught and ended
 * the node.
 *
 * @module
 */

import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  type OutgoingHttpHeaders,
  type SecureClientSessionOptions,
} from "node:http2";

/**
 * The connection to one member.
 *
 * @example A stream
 * ```ts ignore
 * using channel = new Http2Channel("http://127.0.0.1:2379", {});
 * const stream = channel.request("/etcdserverpb.KV/Range", {});
 * ```
 */
export class Http2Channel implements Disposable {
  readonly #url: string;
  readonly #tls: SecureClientSessionOptions;
  #session: ClientHttp2Session | undefined;
  #disposed = false;

  /**
   * @param url The member's client URL.
   * @param tls The TLS options of an `https://` URL (CA, client
   *   certificate).
   */
  constructor(url: string, tls: SecureClientSessionOptions) {
    this.#url = url;
    this.#tls = tls;
  }

  /**
   * Opens a `POST` stream. It fails on its own (an `error` event) when the
   * connection cannot be made or fails.
   *
   * @param path The path (`/etcdserverpb.KV/Range`).
   * @param headers Its headers.
   * @returns The stream.
   * @throws {Error} Once disposed, or when the connection refuses a new
   *   stream.
   */
  request(path: string, headers: OutgoingHttpHeaders): ClientHttp2Stream {
    if (this.#disposed) throw new Error("the channel is closed");
    return this.#current().request({
      ...headers,
      ":method": "POST",
      ":path": path,
    });
  }

  /** Ends the connection; its streams fail. */
  [Symbol.dispose](): void {
    this.#disposed = true;
    this.#session?.destroy();
    this.#session = undefined;
  }

  #current(): ClientHttp2Session {
    const open = this.#session;
    // A connection ending now tells its listeners a tick later.
    if (open !== undefined && !open.closed && !open.destroyed) return open;
    const session = connect(this.#url, this.#tls);
    const forget = () => {
      if (this.#session === session) this.#session = undefined;
    };
    // Each stream sees the failure as its own; the session's is nobody's.
    session.on("error", forget);
    session.on("close", forget);
    session.on("goaway", () => {
      forget();
      session.close();
    });
    this.#session = session;
    return session;
  }
}
