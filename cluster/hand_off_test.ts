import assert from "node:assert/strict";
import type { EtcdClient } from "./etcd.ts";
import { GroupCommit, MAX_BATCH_OPS, TOKEN_SLOTS } from "./group_commit.ts";
import { deleteHandingOff, successors } from "./hand_off.ts";
import { EtcdLockSpace } from "./lock_space.ts";
import { LockMirror } from "./lock_mirror.ts";
import { NodeLease } from "./node_lease.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { type RequestKey, requestKey } from "./request_keys.ts";
import { CountingClient } from "./space_nodes.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

const ROOT = "/pklock/v1";

/** Puts a request into a mirror at `revision`; returns its key. */
function put(
  mirror: LockMirror,
  revision: number,
  parts: Omit<RequestKey, "seat" | "name"> & { conn: number },
  value = "{}",
): string {
  const { conn, ...at } = parts;
  const key = requestKey(ROOT, { ...at, name: "h", seat: revision });
  const kv = {
    key,
    value: JSON.stringify({ ...JSON.parse(value), conn }),
    createRevision: revision,
    modRevision: revision,
  };
  mirror.apply([{ type: "put", kv: { ...kv, lease: "1" } }], revision);
  return key;
}

Deno.test(
  "successors() are the requests that hold once a key is gone, not yet marked",
  { permissions: "none" },
  () => {
    const mirror = new LockMirror(ROOT);
    const x1 = put(mirror, 2, { mode: "exclusive", node: "a", conn: 1 });
    const s2 = put(mirror, 3, { mode: "shared", node: "b", conn: 1 });
    const s3 = put(mirror, 4, { mode: "shared", node: "a", conn: 2 });
    const x4 = put(mirror, 5, { mode: "exclusive", node: "b", conn: 2 });
    const keys = (key: string, skip = (_: unknown) => false) =>
      successors(mirror, key, skip).map((r) => r.key);
    assert.deepEqual(keys(x1), [s2, s3], "the run of shared requests");
    assert.deepEqual(keys(s2), [], "a waiter's withdrawal frees nobody");
    assert.deepEqual(
      keys(x1, (r) => (r as { key: string }).key === s2),
      [s3],
      "a request its owner ended is not marked",
    );
    assert.deepEqual(keys("/pklock/v1/q/h/x/unknown.1"), []);
    const granted = JSON.stringify({ since: 1, granted: true, slot: 0 });
    const marked = new LockMirror(ROOT);
    const y1 = put(marked, 2, { mode: "exclusive", node: "a", conn: 1 });
    put(marked, 3, { mode: "exclusive", node: "b", conn: 1 }, granted);
    assert.deepEqual(
      successors(marked, y1, () => false),
      [],
      "a request already marked is not marked again",
    );
    assert.deepEqual(keys(x4), []);
  },
);

etcdTest(
  "a release's txn grants the next waiter on another node, which writes nothing for it",
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
    const revision = Math.floor(
      (waiter.token - b.space.tokenBase) / TOKEN_SLOTS,
    );
    assert.equal(revision, b.space.mirror.get(waiter.key)!.modRevision);
    assert.ok(waiter.token > held.request.token);
  },
);

etcdTest(
  "a release hands off to the next waiter on its own node in the same txn, granted at its answer",
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
    assert.deepEqual(
      grants,
      [waiting.request],
      "granted when the txn answered",
    );
    assert.equal(etcd.txns.length, 1);
    assert.equal(
      waiting.request.token % TOKEN_SLOTS,
      1,
      "slot 1: after the delete",
    );
    assert.ok(waiting.request.token > held.request.token);
  },
);

etcdTest(
  "deleteHandingOff() of many keys sends its first txn before it has prepared the last key",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const keys = 4 * MAX_BATCH_OPS;
    let prepared = 0;
    const preparedAtTxn: number[] = [];
    const etcd = new CountingClient(cluster.endpoints);
    etcd.onTxn = () => preparedAtTxn.push(prepared);
    const mirror = new LockMirror(ROOT);
    const held: string[] = [];
    for (let i = 0; i < keys; i++) {
      const name = `k${i}`;
      const key = requestKey(ROOT, {
        name,
        mode: "exclusive",
        node: "a",
        seat: 0,
      });
      const value = JSON.stringify({ since: 1, conn: 1 });
      await etcd.put({ key, value });
      held.push(key);
      const waiter = requestKey(ROOT, {
        name,
        mode: "exclusive",
        node: "b",
        seat: 0,
      });
      const at = keys + 2 * i;
      const kv = { value, createRevision: at, modRevision: at, lease: "0" };
      mirror.apply([
        { type: "put", kv: { ...kv, key } },
        {
          type: "put",
          kv: {
            ...kv,
            key: waiter,
            createRevision: at + 1,
            modRevision: at + 1,
          },
        },
      ], at + 1);
    }
    const batch = new GroupCommit(etcd, { key: `${ROOT}/nodes/a`, value: "" });
    await deleteHandingOff({
      etcd,
      batch,
      mirror,
      // Asked once per key, of its waiter, when the key is prepared.
      skip: () => (prepared++, false),
      signal: new AbortController().signal,
      onMarked: () => {},
    }, held.map((key) => ({ key })));
    assert.equal(prepared, keys);
    assert.ok(preparedAtTxn.length >= keys / MAX_BATCH_OPS);
    assert.ok(
      preparedAtTxn[0]! < keys,
      `first txn sent after ${preparedAtTxn[0]} of ${keys} keys`,
    );
    const left = await etcd.range({ key: `${ROOT}/q/`, prefix: true });
    assert.deepEqual(left.kvs, [], "every key deleted");
  },
);
