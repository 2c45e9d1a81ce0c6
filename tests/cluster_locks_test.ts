/**
 * Locks across the nodes of a cluster: real `pklock serve --etcd` processes
 * on a real 3-member etcd, the library, the CLI and hand-built legacy frames.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import {
  startNode,
  waitFor,
  waitForLock,
  waitForWaiters,
} from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";
import { ADMIN_SECRET, RawClient, runCli } from "./helpers.ts";
import { frameOf } from "./wire.ts";
import { delay } from "../message/io.ts";
import { ExitCode } from "../cli/exit_codes.ts";

etcdTest("two nodes share one lock space", async (t) => {
  await using etcd = await startEtcdCluster();
  await using a = await startNode(etcd.endpoints, {
    admin: { secret: ADMIN_SECRET },
  });
  await using b = await startNode(etcd.endpoints);

  await t.step(
    "waiters on both nodes are granted in FIFO order, tokens increasing",
    async () => {
      await using onA = await connect({ port: a.port });
      await using onB = await connect({ port: b.port });
      await using onA2 = await connect({ port: a.port });
      const first = await onA.lock("fifo");
      const order: string[] = [];
      const second = onB.lock("fifo").then((lock) => {
        order.push("b");
        return lock;
      });
      // The second request is queued (status shows it) before the third asks.
      await waitForWaiters(onA, "fifo", 1);
      const third = onA2.lock("fifo").then((lock) => {
        order.push("a2");
        return lock;
      });
      await waitForWaiters(onB, "fifo", 2);
      await first.release();
      const got = await second;
      assert.ok(got.token > first.token);
      await got.release();
      const last = await third;
      assert.ok(last.token > got.token);
      await last.release();
      assert.deepEqual(order, ["b", "a2"]);
    },
  );

  await t.step(
    "a lock released on a node is gone from that node's status at once",
    async () => {
      await using client = await connect({ port: a.port });
      const hold = await client.lock("brief");
      await hold.release();
      // The release is answered before its delete commits.
      assert.deepEqual((await client.status()).locks, []);
    },
  );

  await t.step(
    "shared holders on two nodes exclude an exclusive one",
    async () => {
      await using r1 = await connect({ port: a.port });
      await using r2 = await connect({ port: b.port });
      await using w = await connect({ port: a.port });
      const s1 = await r1.lock("doc", { mode: "shared" });
      const s2 = await r2.lock("doc", { mode: "shared" });
      assert.equal(await w.tryLock("doc"), null);
      const writer = w.lock("doc");
      writer.catch(() => {});
      await waitForWaiters(r2, "doc", 1);
      await s1.release();
      await waitForLock(r2, "doc", (lock) => lock?.holders.length === 1);
      await s2.release();
      const held = await writer;
      assert.ok(held.token > Math.max(s1.token, s2.token));
      await held.release();
    },
  );

  await t.step(
    "a legacy client on one node waits while a client of the other holds",
    async () => {
      await using holder = await connect({ port: b.port });
      const hold = await holder.lock("legacy");
      await using raw = await RawClient.connect(a.port);
      await raw.write(
        frameOf('{"command":"lock","parameters":{"lockName":"legacy"},"id":7}'),
      );
      await waitForWaiters(holder, "legacy", 1);
      await hold.release();
      const reply = await raw.next();
      assert.equal(reply?.id, 7);
      const result = reply?.result as { status: string; token: number };
      assert.equal(result.status, "ok");
      assert.ok(result.token > hold.token);
      await raw.write(frameOf('{"command":"unlock","lockName":"legacy"}'));
      assert.deepEqual(await raw.next(), {
        attempted: "unlock",
        result: "ok",
        lockName: "legacy",
      });
    },
  );

  await t.step(
    "status from each node shows every holder and waiter, their nodes, and the live nodes",
    async () => {
      await using holder = await connect({ port: a.port, label: "on-a" });
      await using waiter = await connect({ port: b.port, label: "on-b" });
      const hold = await holder.lock("seen");
      const waiting = waiter.lock("seen");
      waiting.catch(() => {});
      await waitForWaiters(holder, "seen", 1);
      // Each node reads the live nodes every second.
      for (const client of [holder, waiter]) {
        await waitFor(async () =>
          (await client.status()).cluster?.nodes.length === 2
        );
      }
      for (const port of [a.port, b.port]) {
        const result = await runCli(["status", "-p", String(port), "--json"]);
        assert.equal(result.code, 0, result.stderr);
        const report = JSON.parse(result.stdout);
        assert.deepEqual(report.cluster.nodes, [a.node, b.node].sort());
        const lock = report.locks.find((l: { name: string }) =>
          l.name === "seen"
        );
        assert.equal(lock.holders[0].node, a.node);
        assert.equal(lock.holders[0].label, "on-a");
        assert.equal(lock.holders[0].token, hold.token);
        assert.equal(lock.waiters[0].node, b.node);
        assert.equal(lock.waiters[0].label, "on-b");
        const text = await runCli(["status", "-p", String(port)]);
        assert.match(text.stdout, new RegExp(`live nodes: .*${b.node}`));
        assert.match(text.stdout, new RegExp(`held by .* on node ${a.node}`));
      }
      await hold.release();
      await (await waiting).release();
    },
  );

  await t.step(
    "status shows a holder of another node granted after a wait as held since its grant",
    async () => {
      await using holder = await connect({ port: a.port });
      await using waiter = await connect({ port: b.port });
      const hold = await holder.lock("since");
      const waiting = waiter.lock("since");
      waiting.catch(() => {});
      await waitForWaiters(holder, "since", 1);
      const asked = Date.parse(
        (await holder.status()).locks.find((l) => l.name === "since")!
          .waiters[0]!.since,
      );
      // The grant must come on a later millisecond than the ask to tell them
      // apart.
      while (Date.now() <= asked) await delay(1);
      const released = Date.now();
      await hold.release();
      const got = await waiting;
      await waitForLock(
        holder,
        "since",
        (lock) => lock?.holders[0]?.node === b.node,
      );
      const lock = (await holder.status()).locks.find((l) =>
        l.name === "since"
      )!;
      assert.ok(Date.parse(lock.holders[0]!.since) >= released);
      await got.release();
    },
  );

  await t.step(
    "a forced release on one node ends a hold on the other",
    async () => {
      await using holder = await connect({ port: b.port });
      const hold = await holder.lock("stuck");
      const result = await runCli(
        ["release", "stuck", "--force", "-p", String(a.port)],
        { PKLOCK_ADMIN_SECRET: ADMIN_SECRET },
      );
      assert.equal(result.code, 0, result.stderr);
      await waitAborted(hold.lost);
      await using next = await connect({ port: a.port });
      const taken = await next.lock("stuck", { wait: 5_000 });
      assert.ok(taken.token > hold.token);
      await taken.release();
    },
  );
});

function waitAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true })
  );
}

Deno.test("serve --etcd with no etcd answering exits with a clear error", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const result = await runCli([
    "serve",
    "--port",
    "0",
    "--etcd",
    `http://127.0.0.1:${port}`,
  ]);
  assert.equal(result.code, ExitCode.Config, result.stderr);
  assert.match(
    result.stderr,
    new RegExp(
      `^pklock: Cannot join the cluster on etcd http://127\\.0\\.0\\.1:${port}: `,
    ),
  );
});
