/**
 * A torture run across the nodes of a cluster: holder processes on three
 * nodes fight over one lock while holders and whole nodes are killed with
 * kill -9. No two holds may overlap, and tokens must increase in hold order.
 */

import assert from "node:assert/strict";
import { delay } from "../message/io.ts";
import { type PklockNode, startNode } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";
import { type DenoProcess, spawnHolder } from "./helpers.ts";

/** How many grants the run waits for. */
const GRANTS = 24;
/** Every how many grants the holder's node is killed instead of the holder. */
const NODE_KILL_EVERY = 8;
/** How many holders wait at any time. */
const WAITERS = 4;
/** How long each hold lasts before its kill, in milliseconds. */
const HOLD_MS = 30;

interface Holder {
  process: DenoProcess;
  node: PklockNode;
  held: Promise<number>;
}

etcdTest(
  "kill -9 of holders and of nodes across a cluster: no overlapping holds, tokens increasing in hold order",
  async () => {
    await using etcd = await startEtcdCluster();
    const nodes: PklockNode[] = [];
    const holders = new Set<Holder>();
    await using _cleanup = {
      [Symbol.asyncDispose]: async () => {
        await Promise.all(
          [...holders].map((h) => h.process[Symbol.asyncDispose]()),
        );
        await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
      },
    };
    for (let i = 0; i < 3; i++) nodes.push(await startNode(etcd.endpoints));
    let spawned = 0;
    const spawn = () => {
      const node = nodes[spawned++ % nodes.length]!;
      const process = spawnHolder(node.port, "torture");
      const held = process.waitFor(/held (\d+)\n/).then((m) => Number(m[1]));
      held.catch(() => {});
      holders.add({ process, node, held });
    };
    const tokens: number[] = [];
    let nodeKills = 0;
    while (tokens.length < GRANTS) {
      while (holders.size < WAITERS) spawn();
      const [holder, token] = await Promise.race(
        [...holders].map((h) => h.held.then((t) => [h, t] as const)),
      );
      tokens.push(token);
      // While it holds, nobody else may be told "held".
      const others = [...holders].filter((h) => h !== holder);
      const overlap = await Promise.race([
        delay(HOLD_MS).then(() => null),
        ...others.map((h) => h.held),
      ]);
      assert.equal(overlap, null, `token ${overlap} granted during ${token}`);
      if (tokens.length % NODE_KILL_EVERY === 0) {
        // The node dies with its clients' connections; its holders' locks
        // go with its lease, after the TTL.
        const dead = holder.node;
        dead.process.kill("SIGKILL");
        await dead.process.result();
        nodeKills++;
        for (const h of [...holders]) {
          if (h.node !== dead) continue;
          h.process.kill("SIGKILL");
          await h.process.result();
          holders.delete(h);
        }
        nodes[nodes.indexOf(dead)] = await startNode(etcd.endpoints);
      } else {
        holder.process.kill("SIGKILL");
        await holder.process.result();
        holders.delete(holder);
      }
    }
    console.log(
      `${tokens.length} grants, ${nodeKills} node kills; tokens ${
        tokens.join(" ")
      }`,
    );
    for (let i = 1; i < tokens.length; i++) {
      assert.ok(tokens[i]! > tokens[i - 1]!, `tokens ${tokens.join(", ")}`);
    }
  },
);
