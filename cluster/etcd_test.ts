import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import {
  EtcdError,
  EtcdNoSpaceError,
  EtcdUnavailableError,
} from "./etcd_errors.ts";
import { EtcdCompactedError, watch, type WatchBatch } from "./etcd_watch.ts";
import { KV } from "./proto/rpc_pb.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

etcdTest(
  "put, range, txn and deleteRange keep keys, values and revisions",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const first = await etcd.put({ key: "/t/a", value: "1" });
    await etcd.put({ key: "/t/b/é", value: "zwei ✓" });
    await etcd.put({ key: "/tz", value: "outside the prefix" });
    const listed = await etcd.range({ key: "/t/", prefix: true });
    assert.deepEqual(listed.kvs.map((kv) => [kv.key, kv.value]), [
      ["/t/a", "1"],
      ["/t/b/é", "zwei ✓"],
    ]);
    assert.equal(listed.kvs[0]!.createRevision, first);
    const paged = await etcd.range({ key: "/t/", prefix: true, limit: 1 });
    assert.equal(paged.more, true);
    const old = await etcd.range({ key: "/t/", prefix: true, revision: first });
    assert.equal(old.kvs.length, 1);

    const empty = {
      key: "/t/",
      prefix: true,
      target: "create",
      result: "==",
      value: 0,
    } as const;
    const busy = await etcd.txn([empty], [{
      put: { key: "/t/c", value: "no" },
    }], [
      { range: { key: "/t/a" } },
    ]);
    assert.equal(busy.succeeded, false);
    assert.equal(busy.responses[0]!.range!.kvs[0]!.value, "1");
    const held = await etcd.txn(
      [{ key: "/t/a", target: "create", result: "==", value: first }],
      [{ put: { key: "/t/a", value: "2" } }, {
        deleteRange: { key: "/t/b/é" },
      }],
    );
    assert.equal(held.succeeded, true);
    assert.equal(held.responses[1]!.deleted, 1);
    const after = await etcd.range({ key: "/t/a" });
    assert.equal(after.kvs[0]!.modRevision, held.revision);
    assert.equal(after.kvs[0]!.createRevision, first);
    assert.deepEqual(await etcd.deleteRange({ key: "/t/", prefix: true }), {
      deleted: 1,
      revision: held.revision + 1,
    });
  },
);

etcdTest(
  "leases: grant, keep-alive, time to live, revoke and the keys that go with them",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const lease = await etcd.leaseGrant(1);
    assert.equal(lease.ttl >= 2, true, "etcd raises a TTL of 1 to its minimum");
    await etcd.put({ key: "/l/k", value: "v", lease: lease.id });
    assert.equal((await etcd.range({ key: "/l/k" })).kvs[0]!.lease, lease.id);
    assert.equal(await etcd.leaseKeepAlive(lease.id), lease.ttl);
    const live = await etcd.leaseTimeToLive(lease.id);
    assert.equal(live.grantedTtl, lease.ttl);
    assert.ok(live.ttl > 0 && live.ttl <= lease.ttl);
    await etcd.leaseRevoke(lease.id);
    assert.equal((await etcd.range({ key: "/l/k" })).kvs.length, 0);
    assert.equal(
      await etcd.leaseKeepAlive(lease.id),
      0,
      "a gone lease renews to 0",
    );
    assert.equal((await etcd.leaseTimeToLive(lease.id)).ttl, -1);
    await assert.rejects(etcd.leaseRevoke(lease.id), (error) => {
      assert.ok(
        error instanceof EtcdError && !(error instanceof EtcdUnavailableError),
      );
      assert.equal(error.code, 5);
      assert.match(
        error.message,
        /^Cannot call etcd "Lease\.LeaseRevoke": .*lease not found/,
      );
      return true;
    });
  },
);

etcdTest(
  "calls move to the next endpoint past a dead member, and fail typed when none answers",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    await cluster.kill(0);
    const etcd = new EtcdClient(cluster.endpoints);
    assert.ok(await etcd.put({ key: "/f", value: "1" }) > 0);
    assert.notEqual(
      etcd.endpoint,
      cluster.endpoint(0),
      "it moved off the dead member",
    );
    const lonely = new EtcdClient([cluster.endpoint(0)], { retryForMs: 300 });
    const started = performance.now();
    await assert.rejects(lonely.range({ key: "/f" }), EtcdUnavailableError);
    assert.ok(performance.now() - started < 1_500);
  },
);

etcdTest("a full quota is a typed EtcdNoSpaceError", async () => {
  await using cluster = await startEtcdCluster({
    members: 1,
    flags: ["--quota-backend-bytes=262144"],
  });
  const etcd = new EtcdClient(cluster.endpoints);
  const big = "x".repeat(60_000);
  // etcd checks the quota against its database file, which grows when its
  // backend commits (every 100 ms): fast puts may all land before the first.
  const error = await (async () => {
    for (let i = 0; i < 200; i++) {
      try {
        await etcd.put({ key: `/big/${i}`, value: big });
      } catch (error) {
        return error;
      }
    }
  })();
  assert.ok(error instanceof EtcdNoSpaceError, String(error));
  assert.match(error.message, /database space exceeded/);
  assert.equal(
    (await etcd.range({ key: "/big/0" })).kvs.length,
    1,
    "reads still work",
  );
});

async function collect(
  batches: AsyncGenerator<WatchBatch>,
  until: (seen: WatchBatch[]) => boolean,
): Promise<WatchBatch[]> {
  const seen: WatchBatch[] = [];
  while (true) {
    const next = await batches.next();
    if (next.done) return seen;
    seen.push(next.value);
    if (until(seen)) return seen;
  }
}

function keys(seen: WatchBatch[]): string[] {
  return seen.flatMap((b) => b.events.map((e) => `${e.type} ${e.kv.key}`));
}

etcdTest(
  "watch() delivers changes in order and progress while idle",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const start = await etcd.put({ key: "/w/before", value: "" });
    await etcd.put({ key: "/w/a", value: "1" });
    await etcd.deleteRange({ key: "/w/a" });
    await etcd.put({ key: "/other", value: "" });
    const batches = watch(etcd, { key: "/w/", prefix: true }, {
      startRevision: start + 1,
    });
    const seen = await collect(
      batches,
      (seen) => seen.some((b) => b.events.length === 0),
    );
    await batches.return();
    assert.deepEqual(keys(seen), ["put /w/a", "delete /w/a"]);
    const progress = seen.at(-1)!;
    assert.equal(
      progress.revision,
      start + 3,
      "progress covers the unrelated put",
    );
  },
);

etcdTest(
  "watch() resumes on another member after its member is killed, missing nothing",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const writer = new EtcdClient([cluster.endpoint(1), cluster.endpoint(2)]);
    const start = await writer.put({ key: "/r/0", value: "" });
    const batches = watch(etcd, { key: "/r/", prefix: true }, {
      startRevision: start,
    });
    assert.deepEqual(keys(await collect(batches, () => true)), ["put /r/0"]);
    await cluster.kill(0);
    for (let i = 1; i <= 5; i++) {
      await writer.put({ key: `/r/${i}`, value: "" });
    }
    const seen = await collect(batches, (seen) => keys(seen).length >= 5);
    await batches.return();
    assert.deepEqual(keys(seen), [1, 2, 3, 4, 5].map((i) => `put /r/${i}`));
    assert.notEqual(etcd.endpoint, cluster.endpoint(0));
  },
);

etcdTest(
  "watch() from a compacted revision ends with EtcdCompactedError",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const first = await etcd.put({ key: "/c/a", value: "" });
    const last = await etcd.put({ key: "/c/a", value: "again" });
    await etcd.call(KV.method.compact, { revision: BigInt(last) });
    await assert.rejects(
      collect(
        watch(etcd, { key: "/c/", prefix: true }, { startRevision: first }),
        () => true,
      ),
      (error) => {
        assert.ok(error instanceof EtcdCompactedError);
        assert.equal(error.compactRevision, last);
        return true;
      },
    );
  },
);

etcdTest(
  "watch() leaves a frozen member once its stream stays silent",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const writer = new EtcdClient([cluster.endpoint(1), cluster.endpoint(2)]);
    const start = await writer.put({ key: "/s/0", value: "" });
    const batches = watch(etcd, { key: "/s/", prefix: true }, {
      startRevision: start,
      progressTimeoutMs: 2_500,
    });
    assert.deepEqual(keys(await collect(batches, () => true)), ["put /s/0"]);
    await cluster.stop(0);
    const stopped = performance.now();
    await writer.put({ key: "/s/1", value: "" });
    const seen = await collect(batches, (seen) => keys(seen).length >= 1);
    const late = performance.now() - stopped;
    await batches.return();
    console.log(
      `event delivered ${Math.round(late)} ms after the member froze`,
    );
    assert.deepEqual(keys(seen), ["put /s/1"]);
    assert.ok(late < 5_000);
  },
);

etcdTest(
  "watch() keeps a stream whose events come more often than its silence bound, past that bound",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const etcd = new EtcdClient(cluster.endpoints);
    const writer = new EtcdClient([cluster.endpoint(1), cluster.endpoint(2)]);
    const first = etcd.endpoint;
    const start = await writer.put({ key: "/k/0", value: "" });
    // Below the members' progress interval: only the events keep it alive.
    const silence = 900;
    const batches = watch(etcd, { key: "/k/", prefix: true }, {
      startRevision: start,
      progressTimeoutMs: silence,
    });
    await collect(batches, () => true);
    const began = performance.now();
    let puts = 0;
    while (performance.now() - began < 3 * silence) {
      await writer.put({ key: `/k/${++puts}`, value: "" });
      await collect(batches, (seen) => seen.some((b) => b.events.length > 0));
    }
    await batches.return();
    assert.ok(puts > 3, `${puts} puts`);
    assert.equal(etcd.endpoint, first, "the stream was never started again");
  },
);
