import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import { EtcdError } from "./etcd_errors.ts";
import {
  type BatchWrite,
  GroupCommit,
  MAX_BATCH_OPS,
  TOKEN_SLOTS,
  tokenFor,
} from "./group_commit.ts";
import { EtcdLockSpace } from "./lock_space.ts";
import { NodeLease } from "./node_lease.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { deleteWrite, markWrite } from "./request_writes.ts";
import { CountingClient } from "./space_nodes.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

/** A lock space on its own lease, recording its grants and refusals. */
async function openSpace(etcd: EtcdClient): Promise<
  {
    space: EtcdLockSpace;
    grants: ClusterRequest[];
    deadlocks: ClusterRequest[];
  } & AsyncDisposable
> {
  const lease = await NodeLease.grant(etcd, { ttlSeconds: 5 });
  const grants: ClusterRequest[] = [];
  const deadlocks: ClusterRequest[] = [];
  const space = await EtcdLockSpace.open(etcd, lease, {
    onGrant: (request) => grants.push(request),
    onLost: () => {},
    onRefused: (request, reason) => {
      if (reason === "deadlock") deadlocks.push(request);
    },
  });
  return {
    space,
    grants,
    deadlocks,
    async [Symbol.asyncDispose]() {
      await space[Symbol.asyncDispose]();
      await lease[Symbol.asyncDispose]();
    },
  };
}

Deno.test(
  "tokenFor() orders grants by revision, then by slot, above the base",
  { permissions: "none" },
  () => {
    assert.equal(tokenFor(10, 0, 0), 10 * TOKEN_SLOTS);
    assert.ok(tokenFor(10, MAX_BATCH_OPS - 1, 0) < tokenFor(11, 0, 0));
    assert.equal(tokenFor(1, 2, 1_000), 1_000 + TOKEN_SLOTS + 2);
  },
);

etcdTest(
  "acquires asked together go in few txns and get unique tokens, rising in slot order",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const etcd = new CountingClient(cluster.endpoints);
    await using node = await openSpace(etcd);
    etcd.txns.length = 0;
    const count = 300;
    const results = await Promise.all(
      Array.from({ length: count }, (_, i) => node.space.acquire(i, `n${i}`)),
    );
    const held = results.map((r) => {
      assert.equal(r.status, "granted");
      return (r as { request: ClusterRequest }).request;
    });
    assert.equal(etcd.txns.length, Math.ceil(count / MAX_BATCH_OPS));
    assert.ok(etcd.txns.every((ops) => ops <= MAX_BATCH_OPS + 1));
    const tokens = held.map((r) => r.token);
    assert.equal(new Set(tokens).size, count, "tokens are unique");
    const sorted = [...held].sort((a, b) =>
      a.createRevision - b.createRevision || a.token - b.token
    );
    for (let i = 1; i < count; i++) {
      assert.ok(sorted[i]!.token > sorted[i - 1]!.token);
    }
    const last = Math.max(...held.map((r) => r.createRevision));
    await node.space.caughtUp(last);
    for (const request of held) {
      const mirrored = node.space.mirror.get(request.key)!;
      assert.equal(node.space.tokenOf(mirrored), request.token);
    }
  },
);

etcdTest(
  "acquires of one lock never share a txn: one granted, the rest queued in the order asked",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const etcd = new CountingClient(cluster.endpoints);
    await using node = await openSpace(etcd);
    etcd.txns.length = 0;
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => node.space.acquire(i, "one")),
    );
    assert.deepEqual(results.map((r) => r.status), [
      "granted",
      ...Array(5).fill("queued"),
    ]);
    const places = results.map((r) =>
      (r as { request: ClusterRequest }).request.createRevision
    );
    for (let i = 1; i < places.length; i++) {
      assert.ok(places[i]! > places[i - 1]!, `places ${places.join(", ")}`);
    }
    assert.equal(etcd.txns.length, 6);
  },
);

etcdTest(
  "a put and a delete of one key never share a txn, and commit in the order asked",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const etcd = new EtcdClient(cluster.endpoints);
    const revision = await etcd.put({ key: "/k", value: "{}" });
    const batch = new GroupCommit(etcd, { key: "/node", value: "{}" });
    const [mark, other, removal] = await Promise.all([
      batch.submit(
        markWrite({
          key: "/k",
          createRevision: revision,
          value: { since: 1 },
          lease: "0",
        }),
      ),
      batch.submit(deleteWrite("/other")),
      batch.submit(deleteWrite("/k")),
    ]);
    assert.equal(mark.response.txn?.succeeded, true);
    assert.equal(other.revision, mark.revision, "other keys join the txn");
    assert.ok(removal.revision > mark.revision);
    assert.equal(removal.response.deleted, 1);
  },
);

etcdTest(
  "a write whose comparison fails, or that etcd refuses, answers only for itself",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const etcd = new CountingClient(cluster.endpoints);
    const revision = await etcd.put({ key: "/k", value: "{}" });
    const batch = new GroupCommit(etcd, { key: "/node", value: "{}" });
    const invalid: BatchWrite = {
      keys: [""],
      bytes: 0,
      puts: true,
      op: () => ({ put: { key: "", value: "x" } }),
    };
    etcd.txns.length = 0;
    const [good, gone, bad] = await Promise.allSettled([
      batch.submit(
        markWrite({
          key: "/k",
          createRevision: revision,
          value: { since: 1 },
          lease: "0",
        }),
      ),
      batch.submit(
        markWrite({
          key: "/nothing",
          createRevision: revision,
          value: { since: 1 },
          lease: "0",
        }),
      ),
      batch.submit(invalid),
    ]);
    assert.equal(good.status, "fulfilled");
    assert.equal(good.value.response.txn?.succeeded, true);
    assert.equal(gone.status, "fulfilled");
    assert.equal(gone.value.response.txn?.succeeded, false);
    assert.equal(bad.status, "rejected");
    assert.ok(bad.reason instanceof EtcdError && bad.reason.code === 3);
    assert.deepEqual(etcd.txns, [4, 2, 2, 2], "one txn, then one per write");
  },
);

etcdTest(
  "two requests of one node queued by one txn and closing one cycle: exactly one is refused",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    await using node = await openSpace(new EtcdClient(cluster.endpoints));
    const { space } = node;
    const first = await space.acquire(1, "c1");
    const second = await space.acquire(2, "c2");
    assert.equal(first.status, "granted");
    assert.equal(second.status, "granted");
    const [a, b] = await Promise.all([
      space.acquire(1, "c2"),
      space.acquire(2, "c1"),
    ]);
    assert.equal(a.status, "queued");
    assert.equal(b.status, "queued");
    const ra = (a as { request: ClusterRequest }).request;
    const rb = (b as { request: ClusterRequest }).request;
    assert.equal(ra.createRevision, rb.createRevision, "one txn queued both");
    await space.caughtUp(ra.createRevision);
    // Of one revision, the key that sorts last is the youngest: ".../c2/…".
    assert.deepEqual(node.deadlocks, [ra]);
    assert.equal(rb.held, false);
  },
);
