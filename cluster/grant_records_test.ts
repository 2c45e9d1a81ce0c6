import assert from "node:assert/strict";
import { RECORD_AFTER_MS } from "./grant_records.ts";
import { TOKEN_SLOTS } from "./group_commit.ts";
import { CountingClient, Node } from "./space_nodes.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";
import { deadline } from "../tests/helpers.ts";
import { delay } from "../message/io.ts";

etcdTest(
  "a hold that deletes granted is recorded after a while, so a node that lists later knows its token",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    await using a = await Node.start(cluster.endpoints);
    await using b = await Node.start(cluster.endpoints);
    const first = await a.held(1, "r");
    const waiter = await b.queued(1, "r");
    await a.locks.caughtUp(waiter.createRevision);
    const released = Date.now();
    await a.locks.release(first);
    await b.until("the waiter granted", () => b.grants.length === 1);
    const granted = b.locks.mirror.get(waiter.key)!.grant!;
    const read = () => a.etcd.range({ key: waiter.key });
    assert.equal((await read()).kvs[0]!.modRevision, waiter.createRevision);
    // The record's write shows in b's mirror.
    await deadline(
      (async () => {
        while (!b.locks.mirror.get(waiter.key)!.value.granted) {
          await b.locks.caughtUp(b.locks.mirror.revision + 1);
        }
      })(),
      RECORD_AFTER_MS + 5_000,
      "the record",
    );
    assert.ok(Date.now() - released >= RECORD_AFTER_MS);
    const [stored] = (await read()).kvs;
    assert.ok(stored!.modRevision > granted.revision, "written later");
    await using c = await Node.start(cluster.endpoints);
    const listed = c.locks.mirror.get(waiter.key)!;
    assert.equal(c.locks.tokenOf(listed), waiter.token);
    assert.equal(
      b.locks.tokenOf(b.locks.mirror.get(waiter.key)!),
      waiter.token,
    );
    assert.equal(
      Math.floor((waiter.token - c.locks.tokenBase) / TOKEN_SLOTS),
      granted.revision,
    );
    assert.deepEqual(listed.grant, granted, "the same grant, and its time");
  },
);

etcdTest(
  "a hold released before the record is due writes nothing but its delete",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const counting = new CountingClient(cluster.endpoints);
    await using a = await Node.start(cluster.endpoints);
    await using b = await Node.start(cluster.endpoints, { etcd: counting });
    const first = await a.held(1, "r");
    const waiter = await b.queued(1, "r");
    await a.locks.caughtUp(waiter.createRevision);
    await a.locks.release(first);
    await b.until("the waiter granted", () => b.grants.length === 1);
    counting.txns.length = 0;
    await b.locks.release(waiter);
    // A negative, so it is shown over a bounded window: past the record's due.
    await delay(RECORD_AFTER_MS + 500);
    assert.deepEqual(counting.txns, [1], "the delete alone");
  },
);
