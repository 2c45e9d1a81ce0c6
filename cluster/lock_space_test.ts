import assert from "node:assert/strict";
import { EtcdClient } from "./etcd.ts";
import { EtcdError, EtcdNoSpaceError } from "./etcd_errors.ts";
import { TOKEN_SLOTS } from "./group_commit.ts";
import type { Compare, TxnOp, TxnResponse } from "./etcd_codec.ts";
import type { ClusterRequest } from "./own_requests.ts";
import { LateTxnClient, Node } from "./space_nodes.ts";
import {
  type EtcdCluster,
  etcdTest,
  startEtcdCluster,
} from "../tests/etcd_cluster.ts";
import { deadline, DenoProcess } from "../tests/helpers.ts";
import { delay } from "../message/io.ts";

/** The revision of the txn that granted a token. */
function revisionOf(token: number, base: number): number {
  return Math.floor((token - base) / TOKEN_SLOTS);
}

/**
 * The node lease's TTL, in seconds, of tests whose point is that nothing is
 * lost: the fast default (2 s, so 1.5 s before the margin) is for tests that
 * wait for a loss, and under load a keep-alive can take longer than that, as
 * in a test whose own work keeps the event loop busy or across an election.
 */
const NO_LOSS_TTL_S = 5;

async function nodes(
  cluster: EtcdCluster,
  count: number,
  ttlSeconds?: number,
): Promise<Node[]> {
  const started: Node[] = [];
  for (let i = 0; i < count; i++) {
    started.push(await Node.start(cluster.endpoints, { ttlSeconds }));
  }
  return started;
}

etcdTest(
  "an exclusive lock passes in FIFO order across three nodes, tokens rising",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b, c] = await nodes(cluster, 3);
    await using _a = a!, _b = b!, _c = c!;
    const first = await a!.held(1, "jobs");
    const second = await b!.queued(1, "jobs");
    const third = await c!.queued(1, "jobs");
    assert.equal(
      (await a!.locks.acquire(2, "jobs", { wait: false })).status,
      "busy",
    );
    assert.ok(second.createRevision < third.createRevision);

    assert.equal(await a!.locks.release(first), true);
    const [granted] = await b!.granted(1);
    assert.equal(granted, second);
    assert.ok(second.token > first.token);
    assert.equal(c!.grants.length, 0, "the third waits behind the second");

    await b!.locks.release(second);
    await c!.granted(1);
    assert.ok(third.token > second.token);
    // The grant is told once the mark commits; the mirror shows it a watch
    // delivery later, at the mark's revision: the token less the base, over
    // the slots of a revision.
    await c!.locks.caughtUp(revisionOf(third.token, c!.locks.tokenBase));
    assert.equal(
      c!.locks.tokenOf(c!.locks.mirror.get(third.key)!),
      third.token,
    );
    await c!.locks.release(third);
    assert.equal(
      (await a!.locks.acquire(3, "jobs", { wait: false })).status,
      "granted",
    );
  },
);

etcdTest(
  "shared holders share across nodes; an exclusive waiter blocks later shared ones",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    const s1 = await a!.held(1, "db", "shared");
    const s2 = await b!.held(1, "db", "shared");
    const x = await a!.queued(2, "db");
    const s3 = await b!.queued(2, "db", "shared");
    const s4 = await b!.queued(3, "db", "shared");
    await a!.locks.release(s1);
    assert.equal(
      a!.grants.length,
      0,
      "the exclusive waits for every shared holder",
    );
    await b!.locks.release(s2);
    await a!.granted(1);
    assert.ok(x.held && x.token > s2.token);
    assert.equal(b!.grants.length, 0);
    await a!.locks.release(x);
    const [g3, g4] = await b!.granted(2);
    assert.deepEqual(
      new Set([g3, g4]),
      new Set([s3, s4]),
      "the shared run is granted together",
    );
    assert.ok(s3.token > x.token && s4.token > x.token);
  },
);

etcdTest(
  "withdrawing a queued exclusive request lets the shared ones behind it in",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    await a!.held(1, "r", "shared");
    const x = await a!.queued(2, "r");
    const s = await b!.queued(1, "r", "shared");
    assert.equal(await a!.locks.release(x), false, "it was only queued");
    await b!.granted(1);
    assert.ok(s.held);
    assert.equal(a!.grants.length, 0, "no grant after a withdrawal");
  },
);

etcdTest(
  "disconnect() ends every request of a connection and grants each waiter on another node",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2, NO_LOSS_TTL_S);
    await using _a = a!, _b = b!;
    const count = 300;
    for (let i = 0; i < count; i++) await a!.held(1, `lock-${i}`);
    await Promise.all(
      Array.from({ length: count }, (_, i) => b!.queued(1, `lock-${i}`)),
    );
    const started = performance.now();
    await a!.locks.disconnect(1);
    await b!.granted(count);
    console.log(
      `${count} locks of one connection re-granted on another node in ${
        Math.round(performance.now() - started)
      } ms`,
    );
    const tokens = b!.grants.map((r) => r.token);
    assert.equal(new Set(tokens).size, count, "every grant has its own token");
    assert.equal(a!.losses.length, 0);
  },
);

etcdTest(
  "a node whose lease is revoked loses its requests; the next waiter is granted",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _b = b!;
    const held = await a!.held(1, "n");
    const other = await a!.held(3, "m");
    const waiting = await a!.queued(2, "m");
    const next = await b!.queued(1, "n");
    await a!.lease.revoke();
    await a!.lost(3);
    assert.deepEqual(
      new Set(a!.losses.map((l) => l.request)),
      new Set([held, other, waiting]),
    );
    await b!.granted(1);
    assert.ok(next.token > held.token);
    await a!.space![Symbol.asyncDispose]();
    await assert.rejects(a!.locks.acquire(4, "n"), /revoked/);
  },
);

etcdTest(
  "kill -9 of the etcd leader while locks are held and waited for loses nothing",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2, NO_LOSS_TTL_S);
    await using _a = a!, _b = b!;
    const held = await a!.held(1, "k");
    const shared = await a!.held(2, "s", "shared");
    const waiter = await b!.queued(1, "k");
    const writer = await b!.queued(2, "s");
    const leader = await cluster.leader();
    const killedAt = performance.now();
    await cluster.kill(leader);
    // Service is back once a write commits; the lease must then have been
    // renewed past the kill without a gap.
    const probe = new EtcdClient(cluster.endpoints);
    while (true) {
      try {
        await probe.put({ key: "/probe", value: "" });
        break;
      } catch {
        // The election is still on; the client already paused between rounds.
      }
    }
    const resumed = performance.now() - killedAt;
    const renewed = await deadline(
      a!.lease.renewed(),
      5_000,
      "a renewal after the kill",
    );
    assert.ok(renewed > a!.lease.now());
    console.log(
      `writes resumed ${Math.round(resumed)} ms after the leader's kill`,
    );
    assert.equal(a!.losses.length, 0, "no holder lost its lock");
    assert.equal(
      b!.grants.length,
      0,
      "no waiter was granted while the holder holds",
    );
    await a!.locks.release(held);
    await a!.locks.release(shared);
    const granted = await b!.granted(2);
    assert.deepEqual(new Set(granted), new Set([waiter, writer]));
    assert.ok(waiter.token > held.token && writer.token > shared.token);
  },
);

etcdTest(
  "a node cut off from etcd declares its locks lost before another node is granted them",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const leader = await cluster.leader();
    const only = (leader + 1) % 3;
    const others = [0, 1, 2].filter((n) => n !== only).map((n) =>
      cluster.endpoint(n)
    );
    await using a = await Node.start([cluster.endpoint(only)]);
    await using b = await Node.start(others);
    const held = await a.held(1, "cut");
    const waiter = await b.queued(1, "cut");
    await cluster.stop(only);
    const stoppedAt = Date.now();
    await a.lost(1);
    await b.granted(1);
    const lostAt = a.losses[0]!.at;
    const grantedAt = Date.now();
    console.log(
      `member frozen at ${stoppedAt}; node A declared its lock lost at ${lostAt} ` +
        `(+${lostAt - stoppedAt} ms); node B was granted it at ${grantedAt} ` +
        `(+${grantedAt - stoppedAt} ms), ${grantedAt - lostAt} ms later`,
    );
    assert.equal(a.losses[0]!.request, held);
    assert.match(a.losses[0]!.reason, /cannot confirm it with etcd/);
    assert.ok(lostAt < grantedAt);
    assert.ok(waiter.token > held.token);
  },
);

etcdTest("tokens start above the token base kept in etcd", async () => {
  await using cluster = await startEtcdCluster({ members: 3 });
  const etcd = new EtcdClient(cluster.endpoints);
  await etcd.put({ key: "/base/meta/tokenBase", value: "1000000000" });
  await using a = await Node.start(cluster.endpoints, { prefix: "/base" });
  assert.equal(a.locks.tokenBase, 1_000_000_000);
  const held = await a.held(1, "t");
  assert.ok(held.token > 1_000_000_000);
  assert.ok(held.token < 1_000_000_000 + 1_000 * TOKEN_SLOTS);
  const queued = await a.queued(2, "t");
  await a.locks.release(held);
  await a.granted(1);
  assert.ok(queued.token > held.token);
  await a.locks.caughtUp(revisionOf(queued.token, a.locks.tokenBase));
  assert.equal(a.locks.tokenOf(a.locks.mirror.get(queued.key)!), queued.token);
});

etcdTest(
  "a contended lock across three nodes: never two holders, tokens rising in hold order",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const all = await nodes(cluster, 3, NO_LOSS_TTL_S);
    await using _a = all[0]!, _b = all[1]!, _c = all[2]!;
    const rounds = 30;
    let holding = 0;
    let overlaps = 0;
    const tokens: number[] = [];
    async function worker(node: Node, conn: number): Promise<void> {
      for (let i = 0; i < rounds; i++) {
        const result = await node.locks.acquire(conn, "hot");
        let request: ClusterRequest;
        if (result.status === "granted") request = result.request;
        else {
          assert.equal(result.status, "queued");
          request = (result as { request: ClusterRequest }).request;
          await deadline(
            (async () => {
              while (!request.held) await node.granted(node.grants.length + 1);
            })(),
            10_000,
            "a grant",
          );
        }
        if (++holding > 1) overlaps++;
        tokens.push(request.token);
        await delay(2); // the holder's work: a wrong grant would land here
        holding--;
        await node.locks.release(request);
      }
    }
    await Promise.all(
      all.flatMap((node) => [worker(node, 1), worker(node, 2)]),
    );
    assert.equal(overlaps, 0);
    assert.equal(tokens.length, 6 * rounds);
    for (let i = 1; i < tokens.length; i++) {
      assert.ok(
        tokens[i]! > tokens[i - 1]!,
        `token ${i}: ${tokens[i]} after ${tokens[i - 1]}`,
      );
    }
  },
);

etcdTest(
  "kill -9 of a node's process: its lock goes to a waiter on another node within TTL + 1 s",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    await using holder = new DenoProcess(
      new URL("../tests/fixtures/cluster_holder.ts", import.meta.url).pathname,
      [cluster.endpoints.join(","), "crash"],
    );
    const token = Number((await holder.waitFor(/held (\d+)\n/))[1]);
    await using b = await Node.start(cluster.endpoints);
    const waiter = await b.queued(1, "crash");
    holder.kill("SIGKILL");
    await holder.result();
    const killedAt = performance.now();
    await b.granted(1);
    const after = performance.now() - killedAt;
    console.log(
      `waiter granted ${
        Math.round(after)
      } ms after the holder's node was killed (TTL 2 s)`,
    );
    assert.ok(after < 3_000, `${after} ms`);
    assert.ok(waiter.token > token);
  },
);

etcdTest(
  "a full etcd quota refuses acquire with EtcdNoSpaceError, and a release still lets its waiter in",
  async () => {
    await using cluster = await startEtcdCluster({
      members: 1,
      flags: ["--quota-backend-bytes=262144"],
    });
    await using a = await Node.start(cluster.endpoints);
    const held = await a.held(1, "q");
    const waiter = await a.queued(2, "q");
    const filler = new EtcdClient(cluster.endpoints);
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
    await assert.rejects(a.locks.acquire(3, "other"), EtcdNoSpaceError);
    assert.equal(a.locks.mirror.queue("other").length, 0);
    await a.locks.release(held);
    // The release's delete alone lets the waiter in: no write of its own.
    assert.deepEqual(await a.granted(1), [waiter]);
    assert.ok(waiter.token > held.token);
    assert.equal(await a.locks.release(waiter), true);
  },
);

etcdTest(
  "a connection's second request for a lock is refused as already held or waiting",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a] = await nodes(cluster, 1);
    await using _a = a!;
    await a!.held(1, "twice");
    await a!.queued(2, "twice");
    assert.deepEqual(await a!.locks.acquire(1, "twice"), {
      status: "refused",
      reason: "already_held",
    });
    assert.deepEqual(await a!.locks.acquire(2, "twice"), {
      status: "refused",
      reason: "already_waiting",
    });
  },
);

etcdTest(
  "a wait that would close a cycle across two nodes is refused before queueing",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    await a!.held(1, "x");
    await b!.held(1, "y");
    const waiting = await a!.queued(1, "y");
    await b!.locks.caughtUp(waiting.createRevision);
    assert.deepEqual(await b!.locks.acquire(1, "x"), {
      status: "refused",
      reason: "deadlock",
    });
    assert.equal(b!.locks.mirror.queue("x").length, 1, "nothing was queued");
    assert.equal(a!.deadlocks.length + b!.deadlocks.length, 0);
  },
);

etcdTest(
  "two requests racing to close one cycle: exactly one, the younger, is refused",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const [a, b] = await nodes(cluster, 2);
    await using _a = a!, _b = b!;
    let raced = 0;
    for (let round = 0; round < 5; round++) {
      const x = `x${round}`, y = `y${round}`;
      const hx = await a!.held(1, x);
      const hy = await b!.held(1, y);
      const [ra, rb] = await Promise.all([
        a!.locks.acquire(1, y),
        b!.locks.acquire(1, x),
      ]);
      let survivor: ClusterRequest;
      if (ra.status === "queued" && rb.status === "queued") {
        raced++;
        const aYounger = ra.request.createRevision > rb.request.createRevision;
        const [node, younger] = aYounger ? [a!, ra.request] : [b!, rb.request];
        survivor = aYounger ? rb.request : ra.request;
        await node.until(
          "the younger's refusal",
          () => node.deadlocks.includes(younger),
        );
      } else {
        const refused = [ra, rb].filter((r) => r.status === "refused");
        assert.deepEqual(refused, [{ status: "refused", reason: "deadlock" }]);
        survivor = ra.status === "queued"
          ? ra.request
          : (rb as { request: ClusterRequest }).request;
      }
      await a!.locks.release(hx);
      await b!.locks.release(hy);
      const node = survivor.name === y ? a! : b!;
      await node.until("the survivor's grant", () => survivor.held);
      await a!.locks.disconnect(1);
      await b!.locks.disconnect(1);
    }
    assert.equal(a!.deadlocks.length + b!.deadlocks.length, raced);
    console.log(
      `${raced} of 5 rounds raced past both pre-checks and were refused after the fact`,
    );
  },
);

etcdTest(
  "an acquire that failed but commits later, after the node deleted its key, is deleted again when seen: the lock is not blocked",
  async () => {
    await using cluster = await startEtcdCluster();
    const late = new LateTxnClient(cluster.endpoints);
    await using a = await Node.start(cluster.endpoints, { etcd: late });
    await using b = await Node.start(cluster.endpoints);
    late.arm();
    await assert.rejects(a.locks.acquire(1, "late"), EtcdError);
    await late.deleted.promise;
    const committed = await late.commitLate();
    assert.ok(committed.revision > 0);
    const result = await b.locks.acquire(1, "late");
    if (result.status === "queued") await b.granted(1);
    else assert.equal(result.status, "granted");
  },
);

/**
 * An etcd client that, once armed, keeps the answer of its next txn until
 * the test lets it through, as a slow answer does.
 */
class SlowAnswerClient extends EtcdClient {
  #gate: Promise<void> | null = null;
  /** Resolves with the held txn's revision once it has committed. */
  readonly committed = Promise.withResolvers<number>();

  /** The next txn's answer waits for `gate`. */
  holdNextAnswer(gate: Promise<void>): void {
    this.#gate = gate;
  }

  override async txn(
    compare: Compare[],
    success: TxnOp[],
    failure: TxnOp[] = [],
    signal?: AbortSignal,
  ): Promise<TxnResponse> {
    const gate = this.#gate;
    this.#gate = null;
    const answer = await super.txn(compare, success, failure, signal);
    if (gate !== null) {
      this.committed.resolve(answer.revision);
      await gate;
    }
    return answer;
  }
}

etcdTest(
  "an acquire whose answer comes after a release granted it is granted, not left queued",
  async () => {
    await using cluster = await startEtcdCluster({ members: 1 });
    const slow = new SlowAnswerClient(cluster.endpoints);
    await using a = await Node.start(cluster.endpoints);
    await using b = await Node.start(cluster.endpoints, { etcd: slow });
    const first = await a.held(1, "handed");
    const gate = Promise.withResolvers<void>();
    slow.holdNextAnswer(gate.promise);
    const asked = b.locks.acquire(2, "handed");
    await a.locks.caughtUp(await slow.committed.promise);
    await a.locks.release(first);
    // b's mirror shows its request granted before its acquire returns.
    const { revision } = await a.etcd.range({ key: "/" });
    await b.locks.caughtUp(revision);
    const [mine] = b.locks.mirror.queue("handed");
    assert.ok(mine?.grant?.revision, "the release granted it");
    gate.resolve();
    const result = await asked;
    assert.equal(result.status, "granted");
    const { token } = (result as { request: ClusterRequest }).request;
    assert.equal(token, a.locks.tokenOf(a.locks.mirror.get(mine!.key)!));
    assert.ok(token > first.token);
  },
);
