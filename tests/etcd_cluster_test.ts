import assert from "node:assert/strict";
import { etcdTest, freePorts, startEtcdCluster } from "./etcd_cluster.ts";
import { deadline, ROOT } from "./helpers.ts";
import { running } from "./fixtures/cli_processes.ts";
import { delay } from "../message/io.ts";

async function health(endpoint: string): Promise<boolean> {
  return await fetch(`${endpoint}/health`, {
    signal: AbortSignal.timeout(1_000),
  })
    .then((r) => r.json()).then((b) => b.health === "true").catch(() => false);
}

etcdTest(
  "startEtcdCluster() starts 3 healthy members that elect one leader",
  async () => {
    const started = performance.now();
    await using cluster = await startEtcdCluster({ members: 3 });
    console.log(
      `3 members healthy in ${Math.round(performance.now() - started)} ms`,
    );
    assert.equal(cluster.endpoints.length, 3);
    assert.ok(cluster.endpoints.every((e) => !/:(2379|2380)$/.test(e)));
    for (const endpoint of cluster.endpoints) assert.ok(await health(endpoint));
    const leader = await cluster.leader();
    assert.ok(leader >= 0 && leader < 3);
  },
);

etcdTest(
  "a cluster whose port another test's etcd took starts again on free ports, and its members are its own",
  async () => {
    await using other = await startEtcdCluster({ members: 1 });
    const taken = Number(new URL(other.endpoint(0)).port);
    const [peer] = freePorts(1);
    await using cluster = await startEtcdCluster({
      members: 1,
      ports: [taken, peer!],
    });
    assert.notEqual(cluster.endpoint(0), other.endpoint(0));
    const put = (endpoint: string) =>
      fetch(`${endpoint}/v3/kv/put`, {
        method: "POST",
        body: JSON.stringify({ key: btoa("mine"), value: btoa("1") }),
      }).then((r) => r.json());
    await put(cluster.endpoint(0));
    const read = await fetch(`${other.endpoint(0)}/v3/kv/range`, {
      method: "POST",
      body: JSON.stringify({ key: btoa("mine") }),
    }).then((r) => r.json());
    assert.equal(read.count, undefined, "the put went to the other cluster");
  },
);

etcdTest(
  "a killed member is unreachable and a restarted one healthy again",
  async () => {
    await using cluster = await startEtcdCluster({ members: 3 });
    const leader = await cluster.leader();
    await cluster.kill(leader);
    assert.equal(await health(cluster.endpoint(leader)), false);
    const next = await cluster.leader();
    assert.notEqual(next, leader);
    await cluster.restart(leader);
    assert.ok(await health(cluster.endpoint(leader)));
  },
);

etcdTest(
  "the members die with the process that started them, even by kill -9",
  async () => {
    const owner = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}tests/fixtures/etcd_owner.ts`],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = owner.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let pids: number[] = [];
    let dir = "";
    try {
      const { value } = await deadline(reader.read(), 30_000, "the members");
      const words = (value ?? "").trim().split(" ");
      dir = words.pop() ?? "";
      assert.match(dir, /pklock-etcd-/);
      pids = words.map(Number);
      assert.equal(pids.length, 3);
      assert.ok(pids.every(running));
      owner.kill("SIGKILL");
      await owner.status;
      // Not children of this process: nothing to await but their state.
      for (let tries = 0; tries < 250 && pids.some(running); tries++) {
        await delay(20);
      }
      assert.deepEqual(pids.filter(running), [], "members left running");
    } finally {
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Gone, as they should be.
        }
      }
      await reader.cancel().catch(() => {});
      // Its owner, killed, could not remove it.
      if (dir !== "") await Deno.remove(dir, { recursive: true });
    }
  },
);
