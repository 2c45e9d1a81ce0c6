/**
 * The PostgreSQL lock recipe through `npm:postgres` (postgres.js), the client
 * a Deno application would most likely use. The bench drives PostgreSQL with
 * the leaner {@linkcode PostgresLockClient} by default, because with this
 * client the driver, not PostgreSQL, runs out of CPU first; `--pg-client npm`
 * runs this one to cross-check the raw client's figures.
 *
 * @module
 */

import postgres from "postgres";
import type { BenchClient } from "./common.ts";
import type { PostgresTarget } from "./postgres.ts";

type Sql = ReturnType<typeof postgres>;

function openSql(target: PostgresTarget): Sql {
  return postgres({
    host: "127.0.0.1",
    port: target.port,
    user: target.user,
    database: "postgres",
    max: 1,
    idle_timeout: 0,
    max_lifetime: null,
    connect_timeout: 120,
    // Skips the type catalogue query at connect: the queries only return
    // booleans and void.
    fetch_types: false,
    prepare: true,
    onnotice: () => {},
  });
}

/** One postgres.js pool of one connection (`max: 1`), bound to one lock. */
export class PostgresNpmClient implements BenchClient {
  readonly #sql: Sql;
  readonly #name: string;

  private constructor(sql: Sql, name: string) {
    this.#sql = sql;
    this.#name = name;
  }

  /**
   * Makes a client and waits until its connection is open.
   *
   * @param target The server.
   * @param name The lock this client takes.
   * @returns The connected client.
   */
  static async connect(
    target: PostgresTarget,
    name: string,
  ): Promise<PostgresNpmClient> {
    const client = new PostgresNpmClient(openSql(target), name);
    await client.#sql`select 1`;
    return client;
  }

  /** Blocks in `pg_advisory_lock` until the lock is granted. */
  async lock(): Promise<void> {
    await this.#sql`select pg_advisory_lock(hashtext(${this.#name}))`;
  }

  /** `pg_advisory_unlock`; throws if the session did not hold the lock. */
  async release(): Promise<void> {
    const [row] = await this.#sql`
      select pg_advisory_unlock(hashtext(${this.#name})) as ok`;
    if (row?.ok !== true) {
      throw new Error(`pg_advisory_unlock("${this.#name}") returned false`);
    }
  }

  /** A `select 1` round trip. */
  async touch(): Promise<void> {
    await this.#sql`select 1`;
  }

  /** Ends the session (Terminate, then FIN) without waiting. */
  close(): void {
    this.#sql.end({ timeout: 0 }).catch(() => {});
  }
}
