/**
 * Benchmark clients of the pklock server. {@linkcode PklockRawClient} speaks
 * the framed protocol directly with pre-encoded requests, so that the driver
 * spends as little CPU as possible per request; {@linkcode PklockLibClient}
 * goes through the public client library (mod.ts) for comparison.
 *
 * @module
 */

import { connect, type Lock, type LockClient } from "../../mod.ts";
import { writeAll } from "../../message/io.ts";
import { type BenchClient, ByteReader, bytesEqual, indexOf } from "./common.ts";

const encoder = new TextEncoder();

/** The request ids the raw client uses: one request in flight at a time. */
const LOCK_ID = 1;
const RELEASE_ID = 2;
const PING_ID = 3;

const PING_REPLY = encoder.encode(`{"id":${PING_ID},"result":{"status":"ok"}}`);
const RELEASE_REPLY = encoder.encode(
  `{"id":${RELEASE_ID},"result":{"status":"ok"}}`,
);
const STATUS_OK = encoder.encode('"status":"ok"');
const PING = frame({ command: "ping", id: PING_ID });

/** A grant reads `{"id":1,"result":{"status":"ok","token":N}}`. */
const GRANT_PREFIX = encoder.encode(
  `{"id":${LOCK_ID},"result":{"status":"ok","token":`,
);

function frame(message: unknown): Uint8Array {
  const payload = encoder.encode(JSON.stringify(message));
  const bytes = new Uint8Array(4 + payload.length);
  new DataView(bytes.buffer).setUint32(0, payload.length);
  bytes.set(payload, 4);
  return bytes;
}

function lockFrame(name: string, id: number, notify = false): Uint8Array {
  const parameters = notify ? { lockName: name, notify } : { lockName: name };
  return frame({ command: "lock", parameters, id });
}

/**
 * A pklock connection bound to one lock name, with its `lock` and `release`
 * frames encoded once. It keeps one request in flight, so every reply is the
 * answer to the request just sent and no reply needs matching by id.
 */
export class PklockRawClient implements BenchClient {
  readonly #conn: Deno.TcpConn;
  readonly #reader: ByteReader;
  readonly #lock: Uint8Array;
  readonly #release: Uint8Array;
  /** The fencing token of the last grant. */
  token = 0;

  private constructor(conn: Deno.TcpConn, name: string) {
    this.#conn = conn;
    this.#reader = new ByteReader(conn);
    this.#lock = lockFrame(name, LOCK_ID);
    this.#release = frame({
      command: "release",
      parameters: { lockName: name },
      id: RELEASE_ID,
    });
  }

  /**
   * Connects to a server on 127.0.0.1.
   *
   * @param port The server's port.
   * @param name The lock this client takes.
   * @returns The connected client.
   */
  static async connect(port: number, name: string): Promise<PklockRawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new PklockRawClient(conn, name);
  }

  /** Asks for the lock and resolves once it is granted. */
  async lock(): Promise<void> {
    await this.#conn.write(this.#lock);
    const reader = this.#reader;
    const length = await reader.frame();
    const payload = reader.view(length);
    if (!startsWith(payload, GRANT_PREFIX)) {
      throw new Error(`Unexpected reply to lock: ${reader.text(length)}`);
    }
    let token = 0;
    for (let i = GRANT_PREFIX.length; i < payload.length; i++) {
      const digit = payload[i]! - 48;
      if (digit < 0 || digit > 9) break;
      token = token * 10 + digit;
    }
    this.token = token;
    reader.consume(length);
  }

  /** Releases the lock and resolves once the server confirmed. */
  async release(): Promise<void> {
    await this.#conn.write(this.#release);
    await this.#expect(RELEASE_REPLY, "release");
  }

  /**
   * Queues lock requests for many names on this connection at once (a probe
   * that waits for every name), then a ping whose reply proves they are all
   * queued on the server.
   *
   * @param names The names to wait for.
   */
  async queueMany(names: readonly string[]): Promise<void> {
    await this.requestMany(names, 1000);
    await this.touch();
  }

  /**
   * Sends lock requests for many names at once, with ids counting up from
   * `firstId`, and reads nothing.
   *
   * @param names The names.
   * @param firstId The id of the first request.
   * @param notify Whether to ask for `position` events while queued.
   */
  async requestMany(
    names: readonly string[],
    firstId: number,
    notify = false,
  ): Promise<void> {
    const frames = names.map((name, i) => lockFrame(name, firstId + i, notify));
    const total = frames.reduce((sum, f) => sum + f.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const f of frames) bytes.set(f, at), at += f.length;
    await writeAll(this.#conn, bytes);
  }

  /**
   * Reads the next message, whatever it is (a reply or an event).
   *
   * @returns It, parsed.
   */
  async message(): Promise<Record<string, unknown>> {
    const reader = this.#reader;
    const length = await reader.frame();
    const message = JSON.parse(reader.text(length));
    reader.consume(length);
    return message;
  }

  /** Sends a lock request for the bound name without waiting for the grant. */
  async requestLock(): Promise<void> {
    await this.#conn.write(this.#lock);
    await this.touch();
  }

  /** A `ping` round trip. */
  async touch(): Promise<void> {
    await this.#conn.write(PING);
    await this.#expect(PING_REPLY, "ping");
  }

  /**
   * Waits for `count` grants, as queued by {@linkcode queueMany} or
   * {@linkcode requestLock}.
   *
   * @param count How many grants to wait for.
   */
  async grants(count: number): Promise<void> {
    const reader = this.#reader;
    for (let i = 0; i < count; i++) {
      const length = await reader.frame();
      if (indexOf(reader.view(length), STATUS_OK) === -1) {
        throw new Error(
          `Unexpected reply while waiting: ${reader.text(length)}`,
        );
      }
      reader.consume(length);
    }
  }

  /** Drops the connection at once; the server releases what it held. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  async #expect(reply: Uint8Array, what: string): Promise<void> {
    const reader = this.#reader;
    const length = await reader.frame();
    if (!bytesEqual(reader.view(length), reply)) {
      throw new Error(`Unexpected reply to ${what}: ${reader.text(length)}`);
    }
    reader.consume(length);
  }
}

/**
 * The same bench client through the public client library: `connect()`,
 * `client.lock(name)`, `lock.release()`.
 */
export class PklockLibClient implements BenchClient {
  readonly #client: LockClient;
  readonly #name: string;
  #held: Lock | null = null;
  /** The fencing token of the last grant. */
  token = 0;

  private constructor(client: LockClient, name: string) {
    this.#client = client;
    this.#name = name;
  }

  /**
   * Connects (with the library's `hello` exchange).
   *
   * @param port The server's port.
   * @param name The lock this client takes.
   * @returns The connected client.
   */
  static async connect(port: number, name: string): Promise<PklockLibClient> {
    const client = await connect({ hostname: "127.0.0.1", port });
    return new PklockLibClient(client, name);
  }

  /** Asks for the lock and resolves once it is granted. */
  async lock(): Promise<void> {
    const held = await this.#client.lock(this.#name);
    this.token = held.token;
    this.#held = held;
  }

  /** Releases the lock and resolves once the server confirmed. */
  async release(): Promise<void> {
    const held = this.#held;
    this.#held = null;
    await held?.release();
  }

  /** A `ping` round trip. */
  async touch(): Promise<void> {
    await this.#client.ping();
  }

  /** Drops the connection. */
  close(): void {
    this.#client.close().catch(() => {});
  }
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    if (bytes[i] !== prefix[i]) return false;
  }
  return true;
}
