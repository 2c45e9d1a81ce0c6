/**
 * The cluster's lock space against etcd's own lock API (`v3lock` through the
 * gateway) on one throw-away 3-member etcd, in one run:
 *
 * ```sh
 * deno run -A bench/cluster.ts [--seconds 5]
 * ```
 *
 * - uncontended: 32 loops, each its own lock, lock then release;
 * - contended: 8 loops on one lock (on two nodes for the lock space), with the
 *   hand-off from a release call to the next grant on one clock;
 * - disconnect: one connection holds 1,000 locks on one node, a waiter queues
 *   on each at another node; the time from the disconnect to the last grant.
 *
 * Every lock-space node and the driver share this process; the members share
 * the machine.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { EtcdClient } from "../cluster/etcd.ts";
import { EtcdLockSpace } from "../cluster/lock_space.ts";
import type { ClusterRequest } from "../cluster/own_requests.ts";
import { NodeLease } from "../cluster/node_lease.ts";
import { startEtcdCluster } from "../tests/etcd_cluster.ts";
import { Samples } from "./stats.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { seconds: { type: "string", default: "5" } },
});
const SECONDS = Number(values.seconds);

/** One lock-space node whose grants resolve the promise of their request. */
class Node implements AsyncDisposable {
  readonly #waiting = new Map<
    ClusterRequest,
    { resolve: () => void; reject: (error: Error) => void }
  >();
  private constructor(
    readonly lease: NodeLease,
    public space: EtcdLockSpace | null,
  ) {}

  static async start(endpoints: string[]): Promise<Node> {
    const etcd = new EtcdClient(endpoints);
    const lease = await NodeLease.grant(etcd, { ttlSeconds: 10 });
    const node = new Node(lease, null);
    node.space = await EtcdLockSpace.open(etcd, lease, {
      onGrant: (request) => node.#waiting.get(request)?.resolve(),
      onLost: (request, reason) =>
        node.#waiting.get(request)?.reject(new Error(`Lost: ${reason}`)),
      onRefused: (request, reason) =>
        node.#waiting.get(request)?.reject(new Error(`Refused: ${reason}`)),
    });
    return node;
  }

  /** Acquires and resolves once held. */
  async lock(conn: number, name: string): Promise<ClusterRequest> {
    const { request, held } = await this.queue(conn, name);
    await held;
    return request;
  }

  /** Acquires; resolves once queued or held, with a promise of the grant. */
  async queue(
    conn: number,
    name: string,
  ): Promise<{ request: ClusterRequest; held: Promise<void> }> {
    const result = await this.space!.acquire(conn, name);
    if (result.status !== "granted" && result.status !== "queued") {
      throw new Error(`Cannot lock "${name}": ${result.status}`);
    }
    const request = result.request;
    if (request.held) return { request, held: Promise.resolve() };
    const held = new Promise<void>((resolve, reject) =>
      this.#waiting.set(request, { resolve, reject })
    );
    return {
      request,
      held: held.finally(() => void this.#waiting.delete(request)),
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.space?.[Symbol.asyncDispose]();
    await this.lease[Symbol.asyncDispose]();
  }
}

async function loops(
  count: number,
  body: (i: number, until: number) => Promise<number>,
): Promise<number> {
  const warm = performance.now() + 1_000;
  await Promise.all(Array.from({ length: count }, (_, i) => body(i, warm)));
  const until = performance.now() + SECONDS * 1_000;
  const done = await Promise.all(
    Array.from({ length: count }, (_, i) => body(i, until)),
  );
  return done.reduce((a, b) => a + b, 0) / SECONDS;
}

function report(row: string): void {
  console.error(row);
  rows.push(row);
}

function ms(value: number): string {
  return value.toFixed(1);
}

await using cluster = await startEtcdCluster({ members: 3 });
const gateway = new EtcdClient(cluster.endpoints);
const rows: string[] = [];

{
  await using a = await Node.start(cluster.endpoints);
  const rate = await loops(32, async (i, until) => {
    let n = 0;
    while (performance.now() < until) {
      const request = await a.lock(i, `u${i}`);
      await a.space!.release(request);
      n++;
    }
    return n;
  });
  report(
    `| uncontended, C=32, lock space | ${Math.round(rate)} pairs/s | |`,
  );
}

{
  const leases = await Promise.all(
    Array.from({ length: 32 }, () => gateway.leaseGrant(60)),
  );
  const rate = await loops(32, async (i, until) => {
    let n = 0;
    while (performance.now() < until) {
      const { key } = await gateway.call("/v3/lock/lock", {
        name: btoa(`v${i}`),
        lease: leases[i]!.id,
      });
      await gateway.call("/v3/lock/unlock", { key });
      n++;
    }
    return n;
  });
  report(`| uncontended, C=32, v3lock | ${Math.round(rate)} pairs/s | |`);
  await Promise.all(leases.map((l) => gateway.leaseRevoke(l.id)));
}

{
  await using a = await Node.start(cluster.endpoints);
  await using b = await Node.start(cluster.endpoints);
  const handOff = new Samples();
  let releasedAt = 0;
  const rate = await loops(8, async (i, until) => {
    const node = i % 2 === 0 ? a : b;
    let n = 0;
    while (performance.now() < until) {
      const request = await node.lock(i, "hot");
      if (releasedAt > 0) handOff.push(performance.now() - releasedAt);
      n++;
      releasedAt = performance.now();
      await node.space!.release(request);
    }
    releasedAt = 0;
    return n;
  });
  const s = handOff.summary();
  report(
    `| contended, C=8, lock space (2 nodes) | ${Math.round(rate)} grants/s | ${
      ms(s.p50)
    } / ${ms(s.p99)} ms |`,
  );
}

{
  const leases = await Promise.all(
    Array.from({ length: 8 }, () => gateway.leaseGrant(60)),
  );
  const handOff = new Samples();
  let releasedAt = 0;
  const rate = await loops(8, async (i, until) => {
    let n = 0;
    while (performance.now() < until) {
      const { key } = await gateway.call("/v3/lock/lock", {
        name: btoa("hot"),
        lease: leases[i]!.id,
      });
      if (releasedAt > 0) handOff.push(performance.now() - releasedAt);
      n++;
      releasedAt = performance.now();
      await gateway.call("/v3/lock/unlock", { key });
    }
    releasedAt = 0;
    return n;
  });
  const s = handOff.summary();
  report(
    `| contended, C=8, v3lock | ${Math.round(rate)} grants/s | ${ms(s.p50)} / ${
      ms(s.p99)
    } ms |`,
  );
  await Promise.all(leases.map((l) => gateway.leaseRevoke(l.id)));
}

{
  await using a = await Node.start(cluster.endpoints);
  await using b = await Node.start(cluster.endpoints);
  const count = 1_000;
  for (let i = 0; i < count; i += 50) {
    await Promise.all(
      Array.from({ length: 50 }, (_, j) => a.lock(1, `d${i + j}`)),
    );
  }
  const queued: Awaited<ReturnType<Node["queue"]>>[] = [];
  for (let i = 0; i < count; i += 50) {
    queued.push(
      ...await Promise.all(
        Array.from({ length: 50 }, (_, j) => b.queue(1, `d${i + j}`)),
      ),
    );
  }
  const last = Math.max(...queued.map((q) => q.request.createRevision));
  await b.space!.caughtUp(last);
  const started = performance.now();
  await a.space!.disconnect(1);
  await Promise.all(queued.map((q) => q.held));
  report(
    `| disconnect: 1,000 locks re-granted on another node | ${
      Math.round(performance.now() - started)
    } ms | |`,
  );
}

console.log(
  `| workload (3 members, ${SECONDS} s windows) | rate | hand-off p50 / p99 |`,
);
console.log("| --- | --- | --- |");
for (const row of rows) console.log(row);
