/**
 * The PostgreSQL lock recipe: session advisory locks,
 * `pg_advisory_lock(hashtext(NAME))` and `pg_advisory_unlock(hashtext(NAME))`,
 * over a minimal implementation of the PostgreSQL wire protocol (version 3,
 * trust authentication only). Both statements are prepared once per session,
 * as a driver with a statement cache would, and each call is one pre-encoded
 * Bind/Execute/Sync, so the benchmark driver spends little CPU per query.
 * Every client is its own session: PostgreSQL forks a backend for it.
 *
 * @module
 */

import { type BenchClient, ByteReader, ClosedError } from "./common.ts";

/** Where the benchmark's PostgreSQL server listens. */
export interface PostgresTarget {
  /** The TCP port on 127.0.0.1. */
  port: number;
  /** A superuser name (trust authentication). */
  user: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Frontend message builder: a type byte, a length, then the fields. */
class Builder {
  #bytes: number[] = [];

  byte(value: number): this {
    this.#bytes.push(value);
    return this;
  }

  int16(value: number): this {
    this.#bytes.push((value >>> 8) & 0xff, value & 0xff);
    return this;
  }

  int32(value: number): this {
    this.#bytes.push(
      (value >>> 24) & 0xff,
      (value >>> 16) & 0xff,
      (value >>> 8) & 0xff,
      value & 0xff,
    );
    return this;
  }

  raw(bytes: Uint8Array): this {
    for (const b of bytes) this.#bytes.push(b);
    return this;
  }

  string(text: string): this {
    return this.raw(encoder.encode(text)).byte(0);
  }

  /** The fields as one message of `type` (0: the untyped startup message). */
  message(type: number): Uint8Array {
    const body = this.#bytes;
    const header = type === 0 ? 4 : 5;
    const out = new Uint8Array(header + body.length);
    const view = new DataView(out.buffer);
    if (type !== 0) out[0] = type;
    view.setInt32(header - 4, body.length + 4);
    out.set(body, header);
    return out;
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) out.set(part, at), at += part.length;
  return out;
}

const code = (c: string) => c.charCodeAt(0);
const SYNC = new Builder().message(code("S"));
const TERMINATE = new Builder().message(code("X"));

function parse(statement: string, sql: string): Uint8Array {
  return new Builder().string(statement).string(sql).int16(0).message(
    code("P"),
  );
}

/** Bind (one text parameter) + Execute + Sync of a prepared statement. */
function call(statement: string, parameter: string): Uint8Array {
  const value = encoder.encode(parameter);
  const bind = new Builder().string("").string(statement).int16(0).int16(1)
    .int32(value.length).raw(value).int16(0).message(code("B"));
  const execute = new Builder().string("").int32(0).message(code("E"));
  return concat(bind, execute, SYNC);
}

function query(sql: string): Uint8Array {
  return new Builder().string(sql).message(code("Q"));
}

const SELECT_1 = query("select 1");

/** Backend message types read here. */
const AUTHENTICATION = code("R");
const DATA_ROW = code("D");
const ERROR = code("E");
const READY = code("Z");

/** A PostgreSQL error, with the server's message. */
export class PostgresError extends Error {
  override name = "PostgresError";
}

function errorText(body: Uint8Array): string {
  // Fields: a code byte, then a NUL-terminated string; "M" is the message.
  let at = 0;
  while (at < body.length && body[at] !== 0) {
    const field = body[at]!;
    const end = body.indexOf(0, at + 1);
    if (field === code("M")) return decoder.decode(body.subarray(at + 1, end));
    at = end + 1;
  }
  return "unknown error";
}

/** One PostgreSQL session bound to one lock name. */
export class PostgresLockClient implements BenchClient {
  readonly #conn: Deno.TcpConn;
  readonly #reader: ByteReader;
  readonly #lock: Uint8Array;
  readonly #unlock: Uint8Array;

  private constructor(conn: Deno.TcpConn, name: string) {
    this.#conn = conn;
    this.#reader = new ByteReader(conn);
    this.#lock = call("l", name);
    this.#unlock = call("u", name);
  }

  /**
   * Opens a session and prepares the two statements.
   *
   * @param target The server.
   * @param name The lock this client takes.
   * @returns The connected client.
   * @throws {PostgresError} When the server refuses the session.
   */
  static async connect(
    target: PostgresTarget,
    name: string,
  ): Promise<PostgresLockClient> {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: target.port,
    });
    conn.setNoDelay(true);
    const client = new PostgresLockClient(conn, name);
    try {
      await conn.write(
        new Builder().int32(196608).string("user").string(target.user)
          .string("database").string("postgres").byte(0).message(0),
      );
      await client.#result();
      await conn.write(concat(
        parse("l", "select pg_advisory_lock(hashtext($1))"),
        parse("u", "select pg_advisory_unlock(hashtext($1))"),
        SYNC,
      ));
      await client.#result();
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  /** Blocks in `pg_advisory_lock` until the lock is granted. */
  async lock(): Promise<void> {
    await this.#conn.write(this.#lock);
    await this.#result();
  }

  /** `pg_advisory_unlock`; throws if the session did not hold the lock. */
  async release(): Promise<void> {
    await this.#conn.write(this.#unlock);
    const first = await this.#result();
    if (first !== code("t")) {
      throw new PostgresError("pg_advisory_unlock() returned false");
    }
  }

  /** A `select 1` round trip. */
  async touch(): Promise<void> {
    await this.#conn.write(SELECT_1);
    await this.#result();
  }

  /**
   * Runs one statement with the simple query protocol.
   *
   * @param sql The statement.
   * @returns The first column of the first row, as text, or `null`.
   */
  async scalar(sql: string): Promise<string | null> {
    await this.#conn.write(query(sql));
    let value: string | null = null;
    await this.#result((row) => {
      value ??= row;
    });
    return value;
  }

  /** Drops the connection at once, as a crashing client would. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  /** Says goodbye (Terminate), then closes. */
  async end(): Promise<void> {
    try {
      await this.#conn.write(TERMINATE);
    } catch {
      // Gone already.
    }
    this.close();
  }

  /**
   * Reads backend messages up to ReadyForQuery.
   *
   * @param onRow Called with each row's first column as text.
   * @returns The first byte of the first row's first column, or -1.
   * @throws {PostgresError} On an ErrorResponse or an authentication request.
   */
  async #result(onRow?: (value: string | null) => void): Promise<number> {
    const reader = this.#reader;
    let first = -1;
    let error: string | null = null;
    while (true) {
      let length: number;
      try {
        length = await reader.message();
      } catch (cause) {
        if (cause instanceof ClosedError && error !== null) {
          throw new PostgresError(error);
        }
        throw cause;
      }
      const type = reader.first();
      const body = reader.body(length);
      if (type === DATA_ROW) {
        // Int16 column count, then Int32 length (-1: NULL) and the bytes.
        const size = (body[2]! << 24) | (body[3]! << 16) | (body[4]! << 8) |
          body[5]!;
        if (first === -1 && size > 0) first = body[6]!;
        onRow?.(size < 0 ? null : decoder.decode(body.subarray(6, 6 + size)));
      } else if (type === ERROR) {
        error ??= errorText(body);
      } else if (type === AUTHENTICATION) {
        const kind = (body[0]! << 24) | (body[1]! << 16) | (body[2]! << 8) |
          body[3]!;
        if (kind !== 0) {
          throw new PostgresError(
            `The server asks for authentication method ${kind}; the bench ` +
              "only speaks trust",
          );
        }
      }
      reader.consumeMessage(length);
      if (type === READY) {
        if (error !== null) throw new PostgresError(error);
        return first;
      }
    }
  }
}

/**
 * Checks that `hashtext()` maps the names to distinct keys: two names with one
 * key would be one advisory lock, and W1/W3 would block.
 *
 * @param target The server.
 * @param names The lock names used.
 * @returns The number of names whose key collides with another's.
 */
export async function hashCollisions(
  target: PostgresTarget,
  names: readonly string[],
): Promise<number> {
  const client = await PostgresLockClient.connect(target, "admin");
  try {
    const list = names.map((n) => `'${n.replaceAll("'", "''")}'`).join(",");
    const value = await client.scalar(
      `select count(*) - count(distinct hashtext(n)) ` +
        `from unnest(array[${list}]::text[]) as n`,
    );
    return Number(value);
  } finally {
    await client.end();
  }
}
