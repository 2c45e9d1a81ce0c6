import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import { type ClusterRequest, EtcdLockSpace } from "./lock_space.ts";
import { NodeLease } from "./node_lease.ts";
import {
  type EtcdCluster,
  etcdTest,
  startEtcdCluster,
} from "../tests/etcd_cluster.ts";
import { deadline } from "../tests/helpers.ts";

/** One lock-space instance, as if on its own node, recording its events. */
class Node implements AsyncDisposable {
  readonly grants: ClusterRequest[] = [];
  readonly losses: { request: ClusterRequest; reason: string; at: number }[] =
    [];
  #changed = Promise.withResolvers<void>();

  private constructor(
    readonly etcd: EtcdClient,
    readonly lease: NodeLease,
    public space: EtcdLockSpace | null,
  ) {}

  static async start(endpoints: string[]): Promise<Node> {
    const etcd = new EtcdClient(endpoints);
    const lease = await NodeLease.grant(etcd, { ttlSeconds: 2, marginMs: 500 });
    const node = new Node(etcd, lease, null);
    node.space = await EtcdLockSpace.open(etcd, lease, {
      progressTimeoutMs: 3_000,
      onGrant: (request) => node.#record(() => node.grants.push(request)),
      onLost: (request, reason) =>
        node.#record(() =>
          node.losses.push({ request, reason, at: Date.now() })
        ),
    });
    return node;
  }

  get locks(): EtcdLockSpace {
    return this.space!;
  }

  /** Waits until `n` requests have been granted after queueing. */
  async granted(n: number): Promise<ClusterRequest[]> {
    await deadline(
      this.#until(() => this.grants.length >= n),
      10_000,
      `${n} grants`,
    );
    return this.grants.slice(0, n);
  }

  /** Waits until `n` requests have been lost. */
  async lost(n: number): Promise<void> {
    await deadline(
      this.#until(() => this.losses.length >= n),
      10_000,
      `${n} losses`,
    );
  }

  async queued(
    conn: number,
    name: string,
    mode?: "shared",
  ): Promise<ClusterRequest> {
    const result = await this.locks.acquire(conn, name, { mode });
    assert.equal(result.status, "queued");
    return (result as { request: ClusterRequest }).request;
  }

  async held(
    conn: number,
    name: string,
    mode?: "shared",
  ): Promise<ClusterRequest> {
    const result = await this.locks.acquire(conn, name, { mode });
    assert.equal(result.status, "granted");
    return (result as { request: ClusterRequest }).request;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.space?.[Symbol.asyncDispose]();
    await this.lease[Symbol.asyncDispose]();
  }

  async #until(done: () => boolean): Promise<void> {
    while (!done()) await this.#changed.promise;
  }

  #record(change: () => void): void {
    change();
    this.#changed.resolve();
    this.#changed = Promise.withResolvers();
  }
}

async function nodes(cluster: EtcdCluster, count: number): Promise<Node[]> {
  const started: Node[] = [];
  for (let i = 0; i < count; i++) {
    started.push(await Node.start(cluster.endpoints));
  }
  return started;
}

etcdTest(
  "an exclusive lock passes in FIFO order across three nodes, tokens rising",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b, c] = await nodes(cluster, 3);
    await using _a = a!, _b = b!, _c = c!;
    const first = await a!.held(1, "jobs");
    const second = await b!.queued(1, "jobs");
    const third = await c!.queued(1, "jobs");
    assert.equal(
      (await a!.locks.acquire(2, "jobs", { wait: false })).status,
      "busy",
    );
    assert.ok(second.createRevision < third.createRevision);

    assert.equal(await a!.locks.release(first), true);
    const [granted] = await b!.granted(1);
    assert.equal(granted, second);
    assert.ok(second.token > first.token);
    assert.equal(c!.grants.length, 0, "the third waits behind the second");

    await b!.locks.release(second);
    await c!.granted(1);
    assert.ok(third.token > second.token);
    assert.equal(
      c!.locks.tokenOf(c!.locks.mirror.get(third.key)!) || third.token,
      third.token,
    );
    await c!.locks.release(third);
    assert.equal(
      (await a!.locks.acquire(3, "jobs", { wait: false })).status,
      "granted",
    );
  },
);

etcdTest(
  "shared holders share across nodes; an exclusive waiter blocks later shared ones",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    const s1 = await a!.held(1, "db", "shared");
    const s2 = await b!.held(1, "db", "shared");
    const x = await a!.queued(2, "db");
    const s3 = await b!.queued(2, "db", "shared");
    const s4 = await b!.queued(3, "db", "shared");
    await a!.locks.release(s1);
    assert.equal(
      a!.grants.length,
      0,
      "the exclusive waits for every shared holder",
    );
    await b!.locks.release(s2);
    await a!.granted(1);
    assert.ok(x.held && x.token > s2.token);
    assert.equal(b!.grants.length, 0);
    await a!.locks.release(x);
    const [g3, g4] = await b!.granted(2);
    assert.deepEqual(
      new Set([g3, g4]),
      new Set([s3, s4]),
      "the shared run is granted together",
    );
    assert.ok(s3.token > x.token && s4.token > x.token);
  },
);

etcdTest(
  "withdrawing a queued exclusive request lets the shared ones behind it in",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    await a!.held(1, "r", "shared");
    const x = await a!.queued(2, "r");
    const s = await b!.queued(1, "r", "shared");
    assert.equal(await a!.locks.release(x), false, "it was only queued");
    await b!.granted(1);
    assert.ok(s.held);
    assert.equal(a!.grants.length, 0, "no grant after a withdrawal");
  },
);

etcdTest(
  "disconnect() ends every request of a connection and grants each waiter on another node",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    const count = 300;
    for (let i = 0; i < count; i++) await a!.held(1, `lock-${i}`);
    await Promise.all(
      Array.from({ length: count }, (_, i) => b!.queued(1, `lock-${i}`)),
    );
    const started = performance.now();
    await a!.locks.disconnect(1);
    await b!.granted(count);
    console.log(
      `${count} locks of one connection re-granted on another node in ${
        Math.round(performance.now() - started)
      } ms`,
    );
    const tokens = b!.grants.map((r) => r.token);
    assert.equal(new Set(tokens).size, count, "every grant has its own token");
    assert.equal(a!.losses.length, 0);
  },
);

etcdTest(
  "a node whose lease is revoked loses its requests; the next waiter is granted",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _b = b!;
    const held = await a!.held(1, "n");
    const other = await a!.held(3, "m");
    const waiting = await a!.queued(2, "m");
    const next = await b!.queued(1, "n");
    await a!.lease.revoke();
    await a!.lost(3);
    assert.deepEqual(
      new Set(a!.losses.map((l) => l.request)),
      new Set([held, other, waiting]),
    );
    await b!.granted(1);
    assert.ok(next.token > held.token);
    await a!.space![Symbol.asyncDispose]();
    await assert.rejects(a!.locks.acquire(4, "n"), /revoked/);
  },
);
