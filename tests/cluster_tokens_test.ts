/**
 * Fencing tokens in a cluster come from etcd revisions: with no state file,
 * they keep increasing across a restart of every node and of the whole etcd
 * cluster.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { startNode } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";

/** Takes and releases `name` on a node; returns the grant's token. */
async function tokenOn(port: number, name: string): Promise<number> {
  await using client = await connect({ port });
  const lock = await client.lock(name);
  await lock.release();
  return lock.token;
}

etcdTest(
  "tokens keep increasing across a restart of every node and of the whole etcd cluster",
  async () => {
    await using etcd = await startEtcdCluster();
    const tokens: number[] = [];
    {
      await using a = await startNode(etcd.endpoints);
      await using b = await startNode(etcd.endpoints);
      tokens.push(await tokenOn(a.port, "t"), await tokenOn(b.port, "t"));
    }
    {
      await using a = await startNode(etcd.endpoints);
      await using b = await startNode(etcd.endpoints);
      tokens.push(await tokenOn(b.port, "t"), await tokenOn(a.port, "u"));
    }
    await Promise.all([0, 1, 2].map((n) => etcd.kill(n)));
    await Promise.all([0, 1, 2].map((n) => etcd.restart(n)));
    {
      await using a = await startNode(etcd.endpoints);
      await using b = await startNode(etcd.endpoints);
      tokens.push(await tokenOn(a.port, "t"), await tokenOn(b.port, "u"));
    }
    for (let i = 1; i < tokens.length; i++) {
      assert.ok(tokens[i]! > tokens[i - 1]!, `tokens ${tokens.join(", ")}`);
    }
  },
);
