/**
 * Deadlock refusal across the nodes of a cluster: a cycle the asking node's
 * mirror shows, and two requests on two nodes racing to close one cycle.
 */

import assert from "node:assert/strict";
import { connect, RequestRefusedError } from "../mod.ts";
import { startNode, waitForWaiters } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";

function isDeadlock(error: unknown): boolean {
  return error instanceof RequestRefusedError && error.code === "deadlock";
}

etcdTest("deadlock refusal across two nodes", async (t) => {
  await using etcd = await startEtcdCluster();
  await using a = await startNode(etcd.endpoints);
  await using b = await startNode(etcd.endpoints);

  await t.step(
    "the request that would close a cycle through another node is refused",
    async () => {
      await using x = await connect({ port: a.port });
      await using y = await connect({ port: b.port });
      const p = await x.lock("p");
      const q = await y.lock("q");
      const xWaits = x.lock("q");
      xWaits.catch(() => {});
      await waitForWaiters(y, "q", 1);
      await assert.rejects(y.lock("p"), isDeadlock);
      await q.release();
      const got = await xWaits;
      assert.ok(got.token > q.token);
      await got.release();
      await p.release();
    },
  );

  await t.step(
    "two requests on two nodes racing to close one cycle: exactly one is refused",
    async () => {
      // Each round, the two nodes see each other's request before or after
      // queueing their own: refused up front, or the youngest afterwards.
      for (let round = 0; round < 5; round++) {
        await using x = await connect({ port: a.port });
        await using y = await connect({ port: b.port });
        const r = await x.lock(`r${round}`);
        const s = await y.lock(`s${round}`);
        const outcomes = await Promise.allSettled([
          x.lock(`s${round}`).then(async (lock) => {
            await lock.release();
            await r.release();
          }),
          y.lock(`r${round}`).then(async (lock) => {
            await lock.release();
            await s.release();
          }),
          // Whoever is refused releases its own lock, so the other is granted.
        ].map((asked, i) =>
          asked.catch(async (error) => {
            await (i === 0 ? r : s).release();
            throw error;
          })
        ));
        const refused = outcomes.filter((o) => o.status === "rejected");
        assert.equal(refused.length, 1, JSON.stringify(outcomes));
        assert.ok(isDeadlock((refused[0] as PromiseRejectedResult).reason));
      }
    },
  );
});
