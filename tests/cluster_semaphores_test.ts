/**
 * Semaphores (`limit` on shared requests) across the nodes of a cluster:
 * real `pklock serve --etcd` processes on a real 3-member etcd.
 */

import assert from "node:assert/strict";
import { connect, RequestRefusedError } from "../mod.ts";
import { startNode, waitForLock, waitForWaiters } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";
import { RawClient } from "./helpers.ts";
import { frameOf } from "./wire.ts";

function isDeadlock(error: unknown): boolean {
  return error instanceof RequestRefusedError && error.code === "deadlock";
}

function isMismatch(error: unknown): boolean {
  return error instanceof RequestRefusedError &&
    error.code === "limit_mismatch";
}

etcdTest("semaphores across three nodes", async (t) => {
  await using etcd = await startEtcdCluster();
  await using a = await startNode(etcd.endpoints);
  await using b = await startNode(etcd.endpoints);
  await using c = await startNode(etcd.endpoints);

  await t.step(
    "a limit-2 semaphore held from two nodes makes a third node's request wait, and grants it on a release",
    async () => {
      await using onA = await connect({ port: a.port });
      await using onB = await connect({ port: b.port });
      await using onC = await connect({ port: c.port });
      const first = await onA.lock("pool", { limit: 2 });
      const second = await onB.lock("pool", { limit: 2 });
      let third = false;
      const waiting = onC.lock("pool", { limit: 2 }).then((lock) => {
        third = true;
        return lock;
      });
      await waitForWaiters(onC, "pool", 1);
      for (const client of [onA, onB, onC]) {
        const lock = (await client.status()).locks.find((l) =>
          l.name === "pool"
        );
        assert.equal(lock?.limit, 2);
        assert.deepEqual(
          lock?.holders.map((h) => h.node).sort(),
          [
            a.node,
            b.node,
          ].sort(),
        );
        assert.deepEqual(lock?.waiters.map((w) => w.node), [c.node]);
      }
      assert.equal(third, false);
      assert.equal(await onA.tryLock("other", { limit: 2 }) !== null, true);
      await second.release();
      const got = await waiting;
      assert.ok(got.token > Math.max(first.token, second.token));
      await got.release();
      await first.release();
    },
  );

  await t.step(
    "tryLock with a limit is busy while the slots are taken on other nodes, and takes a slot freed there",
    async () => {
      await using onA = await connect({ port: a.port });
      await using onB = await connect({ port: b.port });
      await using onC = await connect({ port: c.port });
      const x = await onA.lock("slots", { limit: 2 });
      const y = await onB.lock("slots", { limit: 2 });
      assert.equal(await onC.tryLock("slots", { limit: 2 }), null);
      await y.release();
      await waitForLock(onC, "slots", (lock) => lock?.holders.length === 1);
      const z = await onC.tryLock("slots", { limit: 2 });
      assert.ok(z !== null && z.token > x.token);
      await z.release();
      await x.release();
    },
  );

  await t.step(
    "an exclusive request on one node waits for the semaphore's holders on others, and shared ones queue behind it",
    async () => {
      await using onA = await connect({ port: a.port });
      await using onB = await connect({ port: b.port });
      await using onC = await connect({ port: c.port });
      const held = await onA.lock("mixed", { limit: 3 });
      const writer = onB.lock("mixed");
      await waitForWaiters(onA, "mixed", 1);
      const reader = onC.lock("mixed", { limit: 3 });
      await waitForWaiters(onA, "mixed", 2);
      await held.release();
      const wrote = await writer;
      await waitForWaiters(onC, "mixed", 1);
      await wrote.release();
      const read = await reader;
      assert.ok(read.token > wrote.token);
      await read.release();
    },
  );

  await t.step(
    "a wait through a full semaphore held on two nodes is refused as a deadlock",
    async () => {
      await using x = await connect({ port: a.port });
      await using y = await connect({ port: b.port });
      await using z = await connect({ port: c.port });
      const xSlot = await x.lock("slots2", { limit: 2 });
      const ySlot = await y.lock("slots2", { limit: 2 });
      const door = await z.lock("door");
      const zSlot = z.lock("slots2", { limit: 2 });
      zSlot.catch(() => {});
      await waitForWaiters(x, "slots2", 1);
      const yDoor = y.lock("door");
      yDoor.catch(() => {});
      await waitForWaiters(x, "door", 1);
      // x waits for z (the door), z for a slot x and y hold, y for the door.
      await assert.rejects(x.lock("door"), isDeadlock);
      await xSlot.release();
      await door.release();
      await (await zSlot).release();
      await (await yDoor).release();
      await ySlot.release();
    },
  );

  await t.step(
    "a wait through a full semaphore whose other holder waits for nothing is no deadlock",
    async () => {
      await using x = await connect({ port: a.port });
      await using y = await connect({ port: b.port });
      await using z = await connect({ port: c.port });
      const xSlot = await x.lock("slots3", { limit: 2 });
      const ySlot = await y.lock("slots3", { limit: 2 });
      const door = await z.lock("door3");
      const zSlot = z.lock("slots3", { limit: 2 });
      zSlot.catch(() => {});
      await waitForWaiters(x, "slots3", 1);
      // x waits for z, z for a slot x and y hold; y is free to end.
      const xDoor = x.lock("door3");
      xDoor.catch(() => {});
      await waitForWaiters(y, "door3", 1);
      await ySlot.release();
      const zGot = await zSlot;
      await door.release();
      const xGot = await xDoor;
      assert.ok(xGot.token > zGot.token);
      await xGot.release();
      await zGot.release();
      await xSlot.release();
    },
  );

  await t.step(
    "a limit other than the one held on another node is refused with limit_mismatch, and nothing is queued",
    async () => {
      await using onA = await connect({ port: a.port });
      await using onB = await connect({ port: b.port });
      const held = await onA.lock("sized", { limit: 2 });
      await assert.rejects(
        onB.lock("sized", { limit: 3 }),
        (error: unknown) =>
          isMismatch(error) &&
          (error as Error).message ===
            'Lock "sized" is held or waited for with a limit of 2, not a limit of 3',
      );
      await assert.rejects(onB.lock("sized", { mode: "shared" }), isMismatch);
      await using raw = await RawClient.connect(b.port);
      await raw.write(frameOf(
        '{"command":"lock","parameters":{"lockName":"sized","limit":5},"id":3}',
      ));
      const reply = await raw.next();
      assert.equal(reply?.id, 3);
      assert.equal(
        (reply?.error as { code: string } | undefined)?.code,
        "limit_mismatch",
      );
      const lock = (await onB.status()).locks.find((l) => l.name === "sized");
      assert.equal(lock?.holders.length, 1);
      assert.equal(lock?.waiters.length, 0);
      await held.release();
    },
  );

  await t.step(
    "two nodes racing with two limits on a free lock: one holds, the other is refused with limit_mismatch",
    async () => {
      for (let round = 0; round < 5; round++) {
        await using onA = await connect({ port: a.port });
        await using onB = await connect({ port: b.port });
        const name = `race${round}`;
        const outcomes = await Promise.allSettled([
          onA.lock(name, { limit: 2 }),
          onB.lock(name, { limit: 3 }),
        ]);
        const held = outcomes.filter((o) => o.status === "fulfilled");
        const refused = outcomes.filter((o) => o.status === "rejected");
        assert.equal(held.length, 1, JSON.stringify(outcomes));
        assert.ok(isMismatch((refused[0] as PromiseRejectedResult).reason));
        await (held[0] as PromiseFulfilledResult<{ release(): Promise<void> }>)
          .value.release();
      }
    },
  );
});
