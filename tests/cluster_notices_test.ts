/**
 * `position` and `contention` events across the nodes of a cluster: a
 * waiter's place and a holder's count of waiters come from every node's
 * requests, as the node's mirror shows them.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { startNode, waitForWaiters } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";
import { Inbox } from "./events.ts";

etcdTest("queue notices across two nodes", async (t) => {
  await using etcd = await startEtcdCluster();
  await using a = await startNode(etcd.endpoints);
  await using b = await startNode(etcd.endpoints);

  await t.step(
    "a waiter on one node is told places that count the other node's waiters",
    async () => {
      await using holder = await connect({ port: a.port });
      await using first = await connect({ port: a.port });
      await using second = await connect({ port: b.port });
      const held = await holder.lock("line");
      const firstGranted = first.lock("line");
      firstGranted.catch(() => {});
      await waitForWaiters(second, "line", 1);
      const places = new Inbox<number>();
      const secondGranted = second.lock("line", { onPosition: places.push });
      secondGranted.catch(() => {});
      assert.equal(await places.next("behind the waiter on the other node"), 2);
      await held.release();
      const got = await firstGranted;
      assert.equal(await places.next("next in line"), 1);
      await got.release();
      const last = await secondGranted;
      assert.ok(last.token > got.token);
      await last.release();
      assert.deepEqual(places.pending, []);
    },
  );

  await t.step(
    "a holder on one node is told how many wait when waiters queue and leave on the other",
    async () => {
      await using holder = await connect({ port: a.port });
      await using waiter = await connect({ port: b.port });
      await using other = await connect({ port: a.port });
      const counts = new Inbox<number>();
      const held = await holder.lock("hot", { onContention: counts.push });
      const controller = new AbortController();
      const waiting = waiter.lock("hot", { signal: controller.signal });
      waiting.catch(() => {});
      assert.equal(await counts.next("a waiter on the other node"), 1);
      const local = other.lock("hot");
      local.catch(() => {});
      assert.equal(await counts.next("and one on this node"), 2);
      controller.abort(new Error("no longer needed"));
      await assert.rejects(waiting, /no longer needed/);
      assert.equal(await counts.next("the other node's waiter left"), 1);
      await held.release();
      await (await local).release();
      assert.deepEqual(counts.pending, []);
    },
  );
});
