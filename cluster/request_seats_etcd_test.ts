import assert from "node:assert/strict";
import { LateTxnClient, Node } from "./space_nodes.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

etcdTest(
  "fifty connections taking a lock in turn use one key once the mirror has seen each release, a few without waiting, not fifty",
  async () => {
    await using cluster = await startEtcdCluster();
    await using a = await Node.start(cluster.endpoints);
    const settled = new Set<string>();
    const hurried = new Set<string>();
    for (let conn = 1; conn <= 100; conn++) {
      const request = await a.held(conn, "turns");
      await a.locks.release(request);
      if (conn > 50) {
        hurried.add(request.key);
        continue;
      }
      settled.add(request.key);
      await a.locks.caughtUp(
        (await a.etcd.range({ key: request.key })).revision,
      );
    }
    console.log(
      `${settled.size} and ${hurried.size} keys for 50 requests each`,
    );
    assert.equal(settled.size, 1);
    assert.ok(hurried.size <= 10, `${hurried.size} keys`);
  },
);

etcdTest(
  "a release whose first delete failed and commits late never deletes the next request's key",
  async () => {
    await using cluster = await startEtcdCluster();
    const late = new LateTxnClient(cluster.endpoints);
    await using a = await Node.start(cluster.endpoints, { etcd: late });
    const first = await a.held(1, "late");
    late.arm();
    await a.locks.release(first);
    const second = await a.held(2, "late");
    assert.notEqual(second.key, first.key, "the doubtful key is not taken");
    await late.commitLate();
    const { kvs } = await a.etcd.range({ key: second.key });
    assert.equal(kvs.length, 1, "the holder's key is still there");
    const third = await a.held(3, "other");
    await a.locks.release(third);
    await a.locks.caughtUp((await a.etcd.range({ key: third.key })).revision);
    const fourth = await a.held(4, "other");
    assert.equal(fourth.key, third.key, "a clean delete frees its key");
  },
);
