import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import { b64 } from "./etcd_codec.ts";
import { Node } from "./space_nodes.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

/**
 * An etcd client one of whose members, once armed, takes the next txn that
 * deletes a key and does not answer it in time, as a frozen or slow member
 * does: the client moves on to the next endpoint, which commits it, and the
 * call succeeds. The member's copy commits later (`commitHeld`), as when
 * that member resumes.
 */
class SlowMemberClient extends EtcdClient {
  #target: ((json: string) => boolean) | null = null;
  #held: (() => Promise<unknown>) | null = null;

  /** The next txn that deletes `key` hangs on its first endpoint. */
  holdDeleteOf(key: string): void {
    const deletes = `"request_delete_range":{"key":"${b64(key)}"`;
    this.#target = (json) => json.includes(deletes);
  }

  /** The next txn hangs on its first endpoint. */
  holdNextTxn(): void {
    this.#target = () => true;
  }

  /** Whether a txn was held. */
  get holding(): boolean {
    return this.#held !== null;
  }

  /** The held txn reaches etcd after all. */
  async commitHeld(): Promise<unknown> {
    return await this.#held!();
  }

  override post(
    url: string,
    json: string,
    token: string | undefined,
    signal: AbortSignal,
  ): Promise<Response> {
    const target = this.#target;
    if (
      target === null || !url.endsWith("/v3/kv/txn") || !target(json)
    ) {
      return super.post(url, json, token, signal);
    }
    this.#target = null;
    this.#held = async () => {
      const late = new AbortController();
      const response = await super.post(url, json, token, late.signal);
      return await response.json();
    };
    const { promise, reject } = Promise.withResolvers<Response>();
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
    return promise;
  }
}

etcdTest(
  "a release taken by the second member after the first timed out never lets the first member's copy delete the next request's key",
  async () => {
    await using cluster = await startEtcdCluster();
    const [endpoint] = cluster.endpoints;
    // Two endpoints, so that the client fails over; both the one member.
    const slow = new SlowMemberClient([endpoint!, endpoint!], {
      timeoutMs: 500,
    });
    await using a = await Node.start(cluster.endpoints, { etcd: slow });
    const first = await a.held(1, "failover");
    slow.holdDeleteOf(first.key);
    await a.locks.release(first);
    assert.ok(slow.holding, "the release's first HTTP try was held");
    await a.locks.caughtUp((await a.etcd.range({ key: first.key })).revision);
    const second = await a.held(2, "failover");
    await slow.commitHeld();
    const { kvs, revision } = await a.etcd.range({ key: second.key });
    await a.locks.caughtUp(revision);
    assert.deepEqual(a.losses.map((l) => l.reason), [], "the holder kept it");
    assert.equal(kvs.length, 1, "the holder's key is still there");
  },
);

etcdTest(
  "an acquire taken by the second member after the first timed out never lets the first member's copy rewrite the next request's limit on the reused seat",
  async () => {
    await using cluster = await startEtcdCluster();
    const [endpoint] = cluster.endpoints;
    const slow = new SlowMemberClient([endpoint!, endpoint!], {
      timeoutMs: 500,
    });
    await using a = await Node.start(cluster.endpoints, { etcd: slow });
    const shared = { mode: "shared", limit: 3 } as const;
    slow.holdNextTxn();
    // Granted through the second endpoint now; a fix may instead refuse it
    // as of unknown outcome, and the scenario must stay harmless then too.
    const old = await a.locks.acquire(1, "sem", shared).catch(() => null);
    assert.ok(slow.holding, "the acquire's first HTTP try was held");
    if (old?.status === "granted") await a.locks.release(old.request);
    await a.locks.caughtUp((await a.etcd.range({ key: "/" })).revision);
    const alone = { mode: "shared", limit: 1 } as const;
    const result = await a.locks.acquire(2, "sem", alone);
    assert.equal(result.status, "granted");
    await slow.commitHeld();
    // A node that lists the store now (it joins, or re-lists after a
    // compaction) reads the old request's limit in the holder's value.
    await using b = await Node.start(cluster.endpoints);
    const other = await b.locks.acquire(3, "sem", shared);
    assert.notEqual(
      other.status,
      "granted",
      "a second holder while the first holds with a limit of 1",
    );
  },
);
