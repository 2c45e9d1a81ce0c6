/**
 * A minimal Redis client for the lock recipe most Redis users write by hand:
 * `SET lock:NAME TOKEN NX` (retried after 1 ms while it answers nil) to take
 * the lock, `DEL lock:NAME` to release it. It speaks RESP over `Deno.connect`
 * with both commands encoded once, and knows only the replies they produce.
 *
 * @module
 */

import { delay } from "../../message/io.ts";
import { type BenchClient, ByteReader } from "./common.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The retry delay after a refused `SET NX`, in milliseconds. */
export const RETRY_MS = 1;

const PLUS = 0x2b; // "+OK"
const DOLLAR = 0x24; // "$-1": nil, the key exists
const COLON = 0x3a; // ":1": DEL's count

function command(...parts: string[]): Uint8Array {
  let text = `*${parts.length}\r\n`;
  for (const part of parts) {
    text += `$${encoder.encode(part).length}\r\n${part}\r\n`;
  }
  return encoder.encode(text);
}

/**
 * Empties the database between runs, so that a key left by a killed driver
 * cannot block the next run forever (Redis locks are never released on
 * disconnect).
 *
 * @param port The server's port.
 */
export async function flushAll(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(command("FLUSHALL"));
    const reader = new ByteReader(conn);
    const length = await reader.line();
    const text = reader.lineText(length);
    if (text !== "+OK") {
      throw new Error(`Unexpected reply to FLUSHALL: ${text}`);
    }
  } finally {
    conn.close();
  }
}

/** One Redis connection bound to one lock name. */
export class RedisLockClient implements BenchClient {
  readonly #conn: Deno.TcpConn;
  readonly #reader: ByteReader;
  readonly #set: Uint8Array;
  readonly #del: Uint8Array;
  readonly #get: Uint8Array;
  readonly #token: Uint8Array;
  /** `SET NX` attempts refused since the client was made. */
  refusals = 0;

  private constructor(conn: Deno.TcpConn, name: string, token: string) {
    this.#conn = conn;
    this.#reader = new ByteReader(conn);
    this.#set = command("SET", `lock:${name}`, token, "NX");
    this.#del = command("DEL", `lock:${name}`);
    this.#get = command("GET", `lock:${name}`);
    this.#token = encoder.encode(token);
  }

  /**
   * Connects to a Redis server on 127.0.0.1.
   *
   * @param port The server's port.
   * @param name The lock this client takes.
   * @param token The value stored while held: unique per client.
   * @returns The connected client.
   */
  static async connect(
    port: number,
    name: string,
    token: string,
  ): Promise<RedisLockClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new RedisLockClient(conn, name, token);
  }

  /**
   * One `SET NX` attempt.
   *
   * @returns Whether the lock was taken.
   */
  async tryLock(): Promise<boolean> {
    await this.#conn.write(this.#set);
    const reader = this.#reader;
    const length = await reader.line();
    const first = reader.first();
    if (first === PLUS) {
      reader.consumeLine(length);
      return true;
    }
    if (first === DOLLAR && length === 3) {
      reader.consumeLine(length);
      this.refusals++;
      return false;
    }
    throw new Error(`Unexpected reply to SET: ${reader.lineText(length)}`);
  }

  /** Takes the lock, retrying every {@linkcode RETRY_MS} while it is taken. */
  async lock(): Promise<void> {
    while (!await this.tryLock()) await delay(RETRY_MS);
  }

  /**
   * Takes the lock unless `deadline` passes first.
   *
   * @param deadline A `performance.now()` time.
   * @returns Whether the lock was taken.
   */
  async lockBefore(deadline: number): Promise<boolean> {
    while (!await this.tryLock()) {
      if (performance.now() >= deadline) return false;
      await delay(RETRY_MS);
    }
    return true;
  }

  /** `DEL`s the key. */
  async release(): Promise<void> {
    await this.#conn.write(this.#del);
    const reader = this.#reader;
    const length = await reader.line();
    if (reader.first() !== COLON) {
      throw new Error(`Unexpected reply to DEL: ${reader.lineText(length)}`);
    }
    reader.consumeLine(length);
  }

  /**
   * `GET`s the key and checks that it holds this client's token: the
   * verified hold's round trip, and a check of ownership in itself.
   */
  async touch(): Promise<void> {
    await this.#conn.write(this.#get);
    const reader = this.#reader;
    const header = await reader.line();
    const text = reader.lineText(header);
    reader.consumeLine(header);
    if (text === "$-1") throw new Error("GET while holding: the key is gone");
    const length = await reader.line();
    const value = reader.lineText(length);
    reader.consumeLine(length);
    if (value !== decoder.decode(this.#token)) {
      throw new Error(
        `GET while holding: the key holds "${value}", not this client's token`,
      );
    }
  }

  /** Sends `PING` and waits for `+PONG`: a readiness check. */
  async ping(): Promise<void> {
    await this.#conn.write(command("PING"));
    const length = await this.#reader.line();
    const text = this.#reader.lineText(length);
    this.#reader.consumeLine(length);
    if (text !== "+PONG") throw new Error(`Unexpected reply to PING: ${text}`);
  }

  /** Drops the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }
}
