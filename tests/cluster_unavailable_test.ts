/**
 * A cluster node that cannot serve a `lock` now (its etcd is frozen, it has
 * no lease, etcd is full) refuses it with `unavailable` and keeps the
 * connection open; the client, a legacy client and the CLI each get a clear
 * answer.
 */

import assert from "node:assert/strict";
import { connect, RequestRefusedError } from "../mod.ts";
import { delay } from "../message/io.ts";
import { EtcdClient } from "../cluster/etcd.ts";
import { EtcdNoSpaceError } from "../cluster/etcd_errors.ts";
import { startNode } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";
import { RawClient, runCli } from "./helpers.ts";

/** The refusal of `lock(name)`, which must be one. */
async function refusal(
  client: { lock(name: string): Promise<{ release(): Promise<void> }> },
  name: string,
): Promise<RequestRefusedError> {
  try {
    const lock = await client.lock(name);
    await lock.release();
  } catch (error) {
    if (error instanceof RequestRefusedError) return error;
    throw error;
  }
  throw new Error(`Lock "${name}" was granted`);
}

etcdTest(
  "a node with no lease (its etcd frozen) answers lock with unavailable and keeps the connection, then serves again",
  async () => {
    await using etcd = await startEtcdCluster({ members: 1 });
    await using node = await startNode(etcd.endpoints);
    await using client = await connect({ port: node.port });
    await using legacy = await RawClient.connect(node.port);
    await etcd.stop(0);
    using _resume = { [Symbol.dispose]: () => etcd.cont(0) };
    await node.process.waitFor(/Lost the node lease/, "stderr");

    const refused = await refusal(client, "x");
    assert.equal(refused.code, "unavailable");
    assert.equal(
      refused.message,
      'Cannot acquire lock "x": this node has no etcd lease at the moment',
    );
    assert.equal(client.signal.aborted, false);
    assert.ok(Array.isArray((await client.status()).locks));

    // A legacy lock gets an error reply without a result, as for any other
    // refusal, and its connection stays usable.
    const reply = await legacy.request({
      command: "lock",
      parameters: { lockName: "x" },
      id: 1,
    });
    assert.equal(reply?.result, undefined);
    assert.equal((reply?.error as { code: string }).code, "unavailable");
    assert.deepEqual(
      await legacy.request({ command: "unlock", lockName: "x" }),
      { attempted: "unlock", result: "notFound", lockName: "x" },
    );

    const run = await runCli([
      "run",
      "-p",
      String(node.port),
      "x",
      "--",
      "true",
    ]);
    assert.equal(run.code, 4, run.stderr);
    assert.match(
      run.stderr,
      /no etcd lease at the moment \(the cluster node at 127\.0\.0\.1:\d+ cannot use etcd now/,
    );

    etcd.cont(0);
    // The node takes a new lease on its own; the same connection is served.
    for (let tries = 0;; tries++) {
      try {
        const lock = await client.lock("x");
        await lock.release();
        break;
      } catch (error) {
        const code = (error as RequestRefusedError).code;
        if (code !== "unavailable" || tries === 100) throw error;
        // No event says "the node has a lease again" to its clients.
        await delay(100);
      }
    }
  },
);

etcdTest(
  "a lock sent while no etcd member answers is refused with unavailable once the etcd client gives up, the lease still held",
  async () => {
    await using etcd = await startEtcdCluster({ members: 1 });
    // A lease long enough to outlast the etcd client's 5 s of retries.
    await using node = await startNode(etcd.endpoints, {
      cluster: { ttl: 20, margin: 1_000 },
    });
    await using client = await connect({ port: node.port });
    const held = await client.lock("kept");
    await etcd.stop(0);
    using _resume = { [Symbol.dispose]: () => etcd.cont(0) };
    const refused = await refusal(client, "y");
    assert.equal(refused.code, "unavailable");
    assert.match(
      refused.message,
      /^Cannot acquire lock "y": Cannot call etcd "KV\.Txn": no endpoint answered within 5000 ms/,
    );
    assert.equal(held.lost.aborted, false, "the held lock was lost");
    etcd.cont(0);
    // Another name: an attempt of the abandoned txn that the frozen member
    // had buffered may still commit once it resumes, after the node deleted
    // the key, and keep "y" held by no one the node knows.
    const next = await client.lock("z");
    assert.ok(next.token > held.token);
    await next.release();
    await held.release();
  },
);

etcdTest(
  "a node whose etcd is full answers lock with unavailable, naming the NOSPACE alarm",
  async () => {
    await using etcd = await startEtcdCluster({
      members: 1,
      flags: ["--quota-backend-bytes=262144"],
    });
    await using node = await startNode(etcd.endpoints);
    await using client = await connect({ port: node.port });
    const held = await client.lock("before");
    const filler = new EtcdClient(etcd.endpoints);
    await assert.rejects(
      (async () => {
        // Up to 200: the quota counts the database file, which grows at
        // etcd's backend commits (every 100 ms), and fast puts precede one.
        for (let i = 0; i < 200; i++) {
          await filler.put({ key: `/fill/${i}`, value: "x".repeat(60_000) });
        }
      })(),
      EtcdNoSpaceError,
    );
    const refused = await refusal(client, "after");
    assert.equal(refused.code, "unavailable");
    assert.match(
      refused.message,
      /^Cannot acquire lock "after": etcd is out of space \(its NOSPACE alarm is raised/,
    );
    await held.release();
  },
);
