import assert from "node:assert/strict";
import type { EtcdClient } from "./etcd.ts";
import { GroupCommit, MAX_BATCH_OPS, TOKEN_SLOTS } from "./group_commit.ts";
import { deleteRequestKeys } from "./request_deletes.ts";
import { EtcdLockSpace } from "./lock_space.ts";
import { NodeLease } from "./node_lease.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { requestKey } from "./request_keys.ts";
import { CountingClient, Node } from "./space_nodes.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

const ROOT = "/pklock/v1";

etcdTest(
  "a release's delete alone grants the next waiter on another node, at the delete's revision",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const open = async (etcd: EtcdClient, grants: ClusterRequest[]) => {
      const lease = await NodeLease.grant(etcd, { ttlSeconds: 5 });
      const space = await EtcdLockSpace.open(etcd, lease, {
        onGrant: (request) => grants.push(request),
        onLost: () => {},
        onRefused: () => {},
      });
      return {
        space,
        async [Symbol.asyncDispose]() {
          await space[Symbol.asyncDispose]();
          await lease[Symbol.asyncDispose]();
        },
      };
    };
    const etcdA = new CountingClient(cluster.endpoints);
    const etcdB = new CountingClient(cluster.endpoints);
    const grantsB: ClusterRequest[] = [];
    await using a = await open(etcdA, []);
    await using b = await open(etcdB, grantsB);
    const held = await a.space.acquire(1, "h");
    assert.equal(held.status, "granted");
    const waiting = await b.space.acquire(1, "h");
    assert.equal(waiting.status, "queued");
    const waiter = (waiting as { request: ClusterRequest }).request;
    await a.space.caughtUp(waiter.createRevision);
    etcdA.txns.length = 0;
    etcdB.txns.length = 0;
    await a.space.release((held as { request: ClusterRequest }).request);
    // The grant comes with the watch event of the release's txn.
    while (grantsB.length === 0) {
      await b.space.caughtUp(b.space.mirror.revision + 1);
    }
    assert.deepEqual(grantsB, [waiter]);
    assert.equal(etcdA.txns.length, 1, "the release: one txn");
    assert.equal(etcdB.txns.length, 0, "no mark of its own");
    assert.deepEqual(etcdA.txns, [1], "one op: the delete alone");
    const { kvs: [stored] } = await etcdA.range({ key: waiter.key });
    assert.equal(stored!.modRevision, waiter.createRevision, "never written");
    const revision = Math.floor(
      (waiter.token - b.space.tokenBase) / TOKEN_SLOTS,
    );
    assert.equal(revision, b.space.mirror.get(waiter.key)!.grant!.revision);
    assert.ok(revision > waiter.createRevision);
    assert.ok(waiter.token > held.request.token);
  },
);

etcdTest(
  "a release grants the next waiter on its own node, in the first slot of the delete's revision",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const etcd = new CountingClient(cluster.endpoints);
    const lease = await NodeLease.grant(etcd, { ttlSeconds: 5 });
    await using _lease = lease;
    const grants: ClusterRequest[] = [];
    await using space = await EtcdLockSpace.open(etcd, lease, {
      onGrant: (request) => grants.push(request),
      onLost: () => {},
      onRefused: () => {},
    });
    const held = await space.acquire(1, "h");
    const waiting = await space.acquire(2, "h");
    assert.equal(held.status, "granted");
    assert.equal(waiting.status, "queued");
    await space.caughtUp(waiting.request.createRevision);
    etcd.txns.length = 0;
    await space.release(held.request);
    while (grants.length === 0) {
      await space.caughtUp(space.mirror.revision + 1);
    }
    assert.deepEqual(grants, [waiting.request]);
    assert.deepEqual(etcd.txns, [1], "one op: the delete alone");
    assert.equal(
      waiting.request.token % TOKEN_SLOTS,
      0,
      "slot 0: no write of that revision took a slot",
    );
    assert.ok(waiting.request.token > held.request.token);
  },
);

etcdTest(
  "deleteRequestKeys() of many keys sends its first txn before it has submitted the last key",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const keys = 4 * MAX_BATCH_OPS;
    let submitted = 0;
    const submittedAtTxn: number[] = [];
    const etcd = new CountingClient(cluster.endpoints);
    etcd.onTxn = () => submittedAtTxn.push(submitted);
    const held: string[] = [];
    for (let i = 0; i < keys; i++) {
      const key = requestKey(ROOT, {
        name: `k${i}`,
        mode: "exclusive",
        node: "a",
        seat: 0,
      });
      await etcd.put({ key, value: JSON.stringify({ since: 1, conn: 1 }) });
      held.push(key);
    }
    const batch = new GroupCommit(etcd, { key: `${ROOT}/nodes/a`, value: "" });
    const counted = Object.assign(Object.create(batch), {
      submit: (write: Parameters<GroupCommit["submit"]>[0]) => {
        submitted++;
        return batch.submit(write);
      },
    }) as GroupCommit;
    await deleteRequestKeys({
      etcd,
      batch: counted,
      signal: new AbortController().signal,
    }, held.map((key) => ({ key })));
    assert.equal(submitted, keys);
    assert.equal(submittedAtTxn.length, keys / MAX_BATCH_OPS);
    assert.ok(
      submittedAtTxn[0]! < keys,
      `first txn sent after ${submittedAtTxn[0]} of ${keys} keys`,
    );
    const left = await etcd.range({ key: `${ROOT}/q/`, prefix: true });
    assert.deepEqual(left.kvs, [], "every key deleted");
  },
);

etcdTest(
  "every node gives the requests a delete lets in the same tokens; past a revision's slots, their own nodes mark them",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    await using a = await Node.start(cluster.endpoints);
    await using b = await Node.start(cluster.endpoints);
    await using c = await Node.start(cluster.endpoints);
    const nodes = [a, b, c];
    // A disconnect that lets in a waiter on each of 200 locks, and one
    // release that lets in more shared waiters than a revision has slots.
    for (let i = 0; i < 200; i++) await a.held(1, `d${i}`);
    const holder = await a.held(2, "s");
    const waiters: ClusterRequest[] = [];
    for (let i = 0; i < 200; i++) {
      waiters.push(await nodes[1 + i % 2]!.queued(10 + i, `d${i}`));
    }
    const many = TOKEN_SLOTS + 2;
    for (let i = 0; i < many; i++) {
      waiters.push(await nodes[1 + i % 2]!.queued(300 + i, "s", "shared"));
    }
    const { revision: queued } = await a.etcd.range({ key: "/" });
    await Promise.all(nodes.map((node) => node.locks.caughtUp(queued)));
    await a.locks.disconnect(1);
    await a.locks.release(holder);
    for (const node of [b, c]) {
      const own = waiters.filter((waiter) =>
        waiter.key.includes(`/${node.locks.node}.`)
      );
      await node.until(
        "its waiters granted",
        () => node.grants.length >= own.length,
      );
      assert.equal(node.grants.length, own.length, "each told once");
    }
    const { revision } = await a.etcd.range({ key: "/" });
    await Promise.all(nodes.map((node) => node.locks.caughtUp(revision)));
    const tokens = new Set(waiters.map((waiter) => waiter.token));
    assert.equal(tokens.size, waiters.length, "unique tokens");
    for (const waiter of waiters) {
      for (const node of nodes) {
        const mirrored = node.locks.mirror.get(waiter.key)!;
        assert.equal(node.locks.tokenOf(mirrored), waiter.token, waiter.key);
      }
    }
    const revisionOf = (waiter: ClusterRequest) =>
      Math.floor((waiter.token - a.locks.tokenBase) / TOKEN_SLOTS);
    const shared = waiters.slice(200);
    const released = Math.min(...shared.map(revisionOf));
    const marked = shared.filter((waiter) => revisionOf(waiter) > released);
    assert.equal(marked.length, many - TOKEN_SLOTS, "marked by their nodes");
    const stored = await a.etcd.range({ key: marked[0]!.key });
    assert.equal(stored.kvs[0]!.modRevision, revisionOf(marked[0]!));
    const handedOff = waiters.slice(0, 200).map(revisionOf);
    assert.ok(new Set(handedOff).size <= Math.ceil(200 / MAX_BATCH_OPS) + 1);
  },
);
