/**
 * The cluster targets of `deno task bench`: `cluster`, pklock nodes
 * (`main.ts serve --etcd …`, each its own process) on a throw-away 3-member
 * etcd, and `v3lock`, etcd's own lock API (`Lock` / `Unlock` through the
 * gateway, one lease per client) on the same members, in one run:
 *
 * - W1, uncontended: each client on its own lock, lock then release;
 * - W2, contended: every client on one lock, with the hand-off from a
 *   holder's release call to the next grant, on the driver's one clock;
 * - drop: one connection holds `--cluster-locks` locks on one node, a second
 *   one on another node queues behind each, the first is closed
 *   (bench/drop.ts).
 *
 * The clients are spread over the nodes (pklock) or the members' gateways
 * (v3lock) round-robin. The two targets' runs interleave, so that load from
 * the rest of a shared machine falls on both. The drops run after the rest:
 * the cluster's `--repeat` times, each on freshly started nodes, then
 * v3lock's once, as it leaves etcd's lock service wedged.
 *
 * @module
 */

import {
  ETCD_MISSING,
  type EtcdCluster,
  startEtcdCluster,
} from "../tests/etcd_cluster.ts";
import type { DriverSpec } from "./driver.ts";
import { describeRun } from "./format.ts";
import { newRecord, type RunRecord } from "./report.ts";
import { type Context, runDriver } from "./run_driver.ts";
import { type Server, startPklock } from "./servers.ts";

/** The targets this module runs. */
export const CLUSTER_TARGETS = ["cluster", "v3lock"] as const;

/** `cluster` or `v3lock`. */
export type ClusterTarget = typeof CLUSTER_TARGETS[number];

/** Why the cluster targets cannot run here, or `null` when etcd is found. */
export const CLUSTER_MISSING: string | null = ETCD_MISSING;

/** The flags of the cluster targets, for `parseArgs` of node:util. */
export const CLUSTER_FLAGS = {
  "cluster-clients": { type: "string", default: "32" },
  "cluster-contenders": { type: "string", default: "8" },
  "cluster-nodes": { type: "string", default: "3" },
  "cluster-locks": { type: "string", default: "1000" },
} as const;

/** The `--help` lines of {@linkcode CLUSTER_FLAGS}. */
export const CLUSTER_HELP =
  `  --cluster-clients LIST      cluster, v3lock: W1 client counts (default: 32)
  --cluster-contenders LIST   cluster, v3lock: W2 client counts (default: 8)
  --cluster-nodes N           cluster: pklock nodes, node k on etcd member
                              k mod 3 first (default: 3)
  --cluster-locks N           cluster, v3lock: locks of the one connection
                              dropped in the disconnect run, W3's place
                              (default: 1000)
                              (--repeat, --duration, --warmup, --workloads
                              and --verify-every apply to both targets)`;

/** What the cluster targets run. */
export interface ClusterOptions {
  /** W1 client counts. */
  clients: number[];
  /** W2 client counts. */
  contenders: number[];
  /** pklock nodes. */
  nodes: number;
  /** Locks of the dropped connection. */
  locks: number;
}

/** Everything {@linkcode runCluster} needs. */
export interface ClusterRun extends ClusterOptions {
  /** The targets, in the order each round runs them. */
  targets: readonly ClusterTarget[];
  /** `w1`, `w2`, and `w3` for the disconnect run. */
  workloads: readonly ("w1" | "w2" | "w3")[];
  /** Seconds measured per W1/W2 run. */
  duration: number;
  /** Seconds of warm-up per W1/W2 run. */
  warmup: number;
  /** Rounds. */
  repeat: number;
  /** W2: every how many grants a hold spans a round trip. */
  verifyEvery: number;
  /** The pklock checkout the nodes run. */
  serverDir: string;
  /** The nodes' `--log-level`, when not their default. */
  logLevel: string | null;
  /** A folder for the nodes' files. */
  tmp: string;
  /** The driver's limits. */
  context: Context;
}

/**
 * Parses the values of {@linkcode CLUSTER_FLAGS}.
 *
 * @param values What `parseArgs` read.
 * @param numbers The bench's parser of positive integer lists.
 * @returns The options.
 */
export function clusterOptions(
  values: { [K in keyof typeof CLUSTER_FLAGS]?: string },
  numbers: (text: string, flag: string) => number[],
): ClusterOptions {
  const list = (flag: keyof typeof CLUSTER_FLAGS) =>
    numbers(values[flag] ?? CLUSTER_FLAGS[flag].default, flag);
  return {
    clients: list("cluster-clients"),
    contenders: list("cluster-contenders"),
    nodes: list("cluster-nodes")[0]!,
    locks: list("cluster-locks")[0]!,
  };
}

/** The etcd cluster of the run under way, for {@linkcode stopCluster}. */
let running: Promise<EtcdCluster> | null = null;

/**
 * Kills the etcd members of a run under way, once they have started if they
 * are starting, and removes their folder (on an interrupt).
 */
export async function stopCluster(): Promise<void> {
  const etcd = await running?.catch(() => null);
  running = null;
  await etcd?.[Symbol.asyncDispose]().catch(() => {});
}

/** The endpoints with member `k mod n` first: node k's own member. */
function rotate(endpoints: readonly string[], k: number): string[] {
  const at = k % endpoints.length;
  return [...endpoints.slice(at), ...endpoints.slice(0, at)];
}

/**
 * Starts etcd and the nodes, runs every round, stops them all.
 *
 * @param run What to run.
 * @param records Where each run's record goes, as it ends.
 */
export async function runCluster(
  run: ClusterRun,
  records: RunRecord[],
): Promise<void> {
  running = startEtcdCluster({ members: 3 });
  await using etcd = await running;
  const nodes: Server[] = [];
  const endpoints = etcd.endpoints;
  const members = endpoints.map((_, n) => etcd.pid(n));
  /** Stops the nodes that run, if any, and starts `run.nodes` new ones. */
  const freshNodes = async () => {
    await Promise.all(nodes.splice(0).map((node) => node.stop()));
    for (let k = 0; k < run.nodes; k++) {
      const dir = await Deno.makeTempDir({ dir: run.tmp, prefix: "node-" });
      nodes.push(
        await startPklock({
          root: run.serverDir,
          dir,
          files: run.context.files,
          logLevel: run.logLevel,
          etcd: rotate(endpoints, k),
        }),
      );
    }
  };
  // The CPU of a target is all of its processes': nodes and members.
  const serverOf = (target: ClusterTarget): Server => ({
    kind: target === "cluster" ? "pklock" : "etcd",
    port: 0,
    pid: members[0]!,
    tree: false,
    others: [
      ...(target === "cluster" ? nodes.map((n) => n.pid) : []),
      ...members.slice(1),
    ],
    stop: () => Promise.resolve(),
  });
  const one = async (
    target: ClusterTarget,
    workload: RunRecord["workload"],
    param: number,
    rep: number,
  ) => {
    const record = newRecord(target, workload, param, rep);
    const spec: DriverSpec = {
      ...(target === "cluster"
        ? { target: "pklock", port: 0, ports: nodes.map((n) => n.port) }
        : { target: "v3lock", port: 0, endpoints }),
      workload,
      clients: param,
      locks: param,
      duration: run.duration,
      warmup: run.warmup,
      verifyEvery: run.verifyEvery,
    };
    records.push(await runDriver(spec, serverOf(target), record, run.context));
    const once = target === "v3lock" && workload === "drop";
    console.log(describeRun(record, once ? 1 : run.repeat));
  };
  try {
    if (run.targets.includes("cluster")) await freshNodes();
    for (let rep = 1; rep <= run.repeat; rep++) {
      for (const workload of run.workloads) {
        if (workload === "w3") continue;
        const params = workload === "w1" ? run.clients : run.contenders;
        for (const param of params) {
          for (const target of run.targets) {
            await one(target, workload, param, rep);
          }
        }
      }
    }
    if (!run.workloads.includes("w3")) return;
    // The drops go last, each on fresh nodes: a mass re-grant can cost the
    // waiter's node its etcd lease, and it would refuse the next runs' locks.
    if (run.targets.includes("cluster")) {
      for (let rep = 1; rep <= run.repeat; rep++) {
        await freshNodes();
        await one("cluster", "drop", run.locks, rep);
      }
    }
    // Once, at the very end: it leaves etcd's lock service wedged (drop.ts).
    if (run.targets.includes("v3lock")) {
      await one("v3lock", "drop", run.locks, 1);
    }
  } finally {
    await Promise.all(nodes.map((node) => node.stop()));
    running = null;
  }
}
