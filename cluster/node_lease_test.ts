import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import { watch } from "./etcd_watch.ts";
import { elapsedClock, NodeLease, NodeLeaseLostError } from "./node_lease.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

const FAST = { ttlSeconds: 2, marginMs: 500 };

function lostAt(lease: NodeLease): Promise<number> {
  return new Promise((resolve) =>
    lease.lost.addEventListener("abort", () => resolve(Date.now()), {
      once: true,
    })
  );
}

Deno.test("elapsedClock() starts near 0 and never goes back", {
  permissions: "none",
}, () => {
  const now = elapsedClock();
  const first = now();
  assert.ok(first >= 0 && first < 50);
  let last = first;
  for (let i = 0; i < 1_000; i++) {
    const reading = now();
    assert.ok(reading >= last);
    last = reading;
  }
});

etcdTest(
  "NodeLease.grant() refuses a margin of half the TTL or more",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const etcd = new EtcdClient(cluster.endpoints);
    await assert.rejects(
      NodeLease.grant(etcd, { ttlSeconds: 2, marginMs: 1_000 }),
      /Cannot keep a node lease: margin 1000 ms is not below half the TTL of 2 s/,
    );
  },
);

etcdTest(
  "a node cut off from etcd fires lost before another observer sees its key deleted",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const leader = await cluster.leader();
    const only = (leader + 1) % 3;
    const others = [0, 1, 2].filter((n) => n !== only).map((n) =>
      cluster.endpoint(n)
    );
    const node = new EtcdClient([cluster.endpoint(only)], { timeoutMs: 500 });
    const observer = new EtcdClient(others);
    await using lease = await NodeLease.grant(node, FAST);
    assert.equal(lease.ttl, 2);
    const put = await node.put({ key: "/held", value: "", lease: lease.id });
    const lost = lostAt(lease);
    const batches = watch(observer, { key: "/held" }, {
      startRevision: put + 1,
    });
    const deleted = (async () => {
      for await (const batch of batches) {
        if (batch.events.some((e) => e.type === "delete")) return Date.now();
      }
      throw new Error("The watch ended");
    })();
    await cluster.stop(only);
    const stoppedAt = Date.now();
    const [lostTime, deletedTime] = await Promise.all([lost, deleted]);
    console.log(
      `member frozen at ${stoppedAt}; lost fired at ${lostTime} (+${
        lostTime - stoppedAt
      } ms); ` +
        `observer saw the key deleted at ${deletedTime} (+${
          deletedTime - stoppedAt
        } ms): ` +
        `${deletedTime - lostTime} ms after lost`,
    );
    assert.ok(
      lostTime < deletedTime,
      "lost fires before the lease expires anywhere",
    );
    assert.ok(lease.lost.reason instanceof NodeLeaseLostError);
    assert.match(
      lease.lost.reason.message,
      /cannot confirm it with etcd; it may expire in \d+ ms/,
    );
  },
);

etcdTest("a keep-alive answered with TTL 0 fires lost at once", async () => {
  await using cluster = await startEtcdCluster({ members: 3 });
  const etcd = new EtcdClient(cluster.endpoints);
  await using lease = await NodeLease.grant(etcd, FAST);
  const lost = lostAt(lease);
  await etcd.leaseRevoke(lease.id);
  const revokedAt = Date.now();
  const lostTime = await lost;
  assert.match(lease.lost.reason.message, /etcd says it has expired/);
  assert.ok(
    lostTime - revokedAt < 1_000,
    "the next keep-alive tells, within TTL/3",
  );
});

etcdTest("revoke() fires lost and deletes the lease's keys", async () => {
  await using cluster = await startEtcdCluster({ members: 3 });
  const etcd = new EtcdClient(cluster.endpoints);
  const lease = await NodeLease.grant(etcd, FAST);
  await etcd.put({ key: "/k", value: "", lease: lease.id });
  await lease.revoke();
  assert.ok(lease.lost.aborted);
  assert.match(lease.lost.reason.message, /revoked/);
  assert.equal((await etcd.range({ key: "/k" })).kvs.length, 0);
});
