/**
 * Benchmark client of etcd's own lock API: v3lock's `Lock` and `Unlock`
 * through etcd's JSON gateway (`/v3/lock/lock`, `/v3/lock/unlock`), over
 * `fetch`. v3lock needs a lease per client: a lock is a key on it, and the
 * lock is released when the key is deleted or the lease ends.
 *
 * @module
 */

import type { BenchClient } from "./common.ts";

/**
 * How long a client's lease lives without renewal: longer than a run, short
 * enough that the leases of a driver whose revokes were cut off by its exit
 * do not outlive the bench by much.
 */
const LEASE_TTL_S = 60;

function base64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/**
 * One POST to a gateway.
 *
 * @param endpoint The member's client URL.
 * @param path The gateway path.
 * @param body The request.
 * @returns The parsed answer.
 * @throws {Error} When the member answers with an error.
 */
export async function gateway(
  endpoint: string,
  path: string,
  body: unknown,
): Promise<Record<string, unknown>> {
  const response = await fetch(`${endpoint}${path}`, {
    method: "POST",
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`etcd ${path} answered ${response.status}: ${text}`);
  }
  return JSON.parse(text);
}

/** A lease of its own, bound to one lock name on one member's gateway. */
export class V3LockClient implements BenchClient {
  readonly #endpoint: string;
  readonly #name: string;
  /** The lease, as the gateway spells it (a decimal string). */
  readonly lease: string;
  #key: string | null = null;
  /** The revision etcd answered the last `Lock` with. */
  token = 0;

  private constructor(endpoint: string, name: string, lease: string) {
    this.#endpoint = endpoint;
    // Per driver process: a key a dead driver left cannot queue the next one.
    this.#name = base64(`${Deno.pid}/${name}`);
    this.lease = lease;
  }

  /**
   * Grants the client's lease, unless it shares one.
   *
   * @param endpoint The member's client URL.
   * @param name The lock this client takes.
   * @param lease A lease to share (one session holding many locks).
   * @returns The client.
   */
  static async connect(
    endpoint: string,
    name: string,
    lease?: string,
  ): Promise<V3LockClient> {
    if (lease !== undefined) return new V3LockClient(endpoint, name, lease);
    const answer = await gateway(endpoint, "/v3/lease/grant", {
      TTL: String(LEASE_TTL_S),
    });
    return new V3LockClient(endpoint, name, String(answer.ID));
  }

  /** Waits in v3lock's queue and resolves once the lock is held. */
  async lock(): Promise<void> {
    const answer = await gateway(this.#endpoint, "/v3/lock/lock", {
      name: this.#name,
      lease: this.lease,
    });
    const header = answer.header as { revision?: string } | undefined;
    this.#key = String(answer.key);
    this.token = Number(header?.revision ?? 0);
  }

  /** Deletes the lock's key. */
  async release(): Promise<void> {
    const key = this.#key;
    this.#key = null;
    await gateway(this.#endpoint, "/v3/lock/unlock", { key });
  }

  /**
   * A read of the held key: the "work" of a verified hold.
   *
   * @throws {Error} When the key is gone (the lock was lost).
   */
  async touch(): Promise<void> {
    const answer = await gateway(this.#endpoint, "/v3/kv/range", {
      key: this.#key,
      count_only: true,
    });
    if (String(answer.count ?? "0") !== "1") {
      throw new Error("v3lock: the held key is gone");
    }
  }

  /** Revokes the lease, which deletes every key of this client. */
  close(): void {
    gateway(this.#endpoint, "/v3/lease/revoke", { ID: this.lease }).catch(
      () => {},
    );
  }
}
