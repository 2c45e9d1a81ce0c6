/**
 * `deno task bench`: runs the lock workloads against pklock and, when they are
 * installed, against Redis and PostgreSQL, and pklock's cluster against etcd's
 * own lock API (bench/cluster.ts), then prints the tables and records them in
 * docs/benchmarks.md.
 *
 * Every server is its own process and every run's clients live in one driver
 * process (bench/driver.ts), so the CPU and memory of each are read apart
 * from /proc. See `deno task bench --help` for the flags.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DriverSpec } from "./driver.ts";
import { flushAll } from "./peers/redis.ts";
import {
  availableKiB,
  hardFileLimit,
  initClock,
  machineShare,
  snapshotMachine,
} from "./proc.ts";
import { type Context, runDriver } from "./run_driver.ts";
import {
  CLUSTER_FLAGS,
  CLUSTER_HELP,
  CLUSTER_MISSING,
  CLUSTER_TARGETS,
  type ClusterOptions,
  clusterOptions,
  type ClusterTarget,
  runCluster,
  stopCluster,
} from "./cluster.ts";
import { renderCluster } from "./cluster_report.ts";
import { delay } from "../message/io.ts";
import { LOG_LEVELS } from "../server/config.ts";
import { newRecord, render, type RunRecord, type Target } from "./report.ts";
import { describeRun } from "./format.ts";
import {
  findPostgres,
  initPostgres,
  killAll,
  type PostgresCluster,
  type Server,
  startFloor,
  startPklock,
  startPostgres,
  startRedis,
  versionOf,
  which,
} from "./servers.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const decoder = new TextDecoder();

const HELP = `deno task bench [flags]

Starts each server as its own process on 127.0.0.1 (pklock from main.ts;
redis-server and PostgreSQL when installed; the Deno socket floor, a canned-
reply server with no locks, in W1), drives it from a separate driver process,
prints the tables and writes them into docs/benchmarks.md. The cluster
targets start a throw-away 3-member etcd: "cluster" runs pklock nodes on it
(main.ts serve --etcd), "v3lock" etcd's own Lock/Unlock through its gateway.

  --targets LIST       pklock,redis,postgres,floor,cluster,v3lock (default:
                       all six; only the cluster's: --targets cluster,v3lock)
  --workloads LIST     w1,w2,w3 (default: all three)
  --clients LIST       W1/W2 client counts (default: 1,8,64)
  --hold LIST          W3 connection counts (default: 1000,10000)
  --pg-hold LIST       W3 counts for PostgreSQL (default: those of --hold up
                       to 1000; 10000 backends take minutes and ~12 GiB)
  --duration SECONDS   measured window of each W1/W2 run (default: 4)
  --warmup SECONDS     unmeasured run-in before each window (default: 1)
  --repeat N           W1/W2 runs per cell; the median is reported (default: 3)
  --client KIND        pklock driver client: raw, lib (mod.ts) or both
                       (default: raw)
  --pg-client KIND     PostgreSQL driver client: raw, npm (npm:postgres) or
                       both (default: raw)
  --verify-every N     W2: every N-th grant is held across a round trip so
                       that overlapping grants can be seen (default: 16)
  --quick              --duration 1.5 --warmup 0.5 --repeat 1 --hold 1000
  --server-dir DIR     the pklock checkout to run (default: this one)
  --log-level LEVEL    pklock's --log-level: what logging costs (default:
                       the server's own, info)
  --out FILE           the report to update (default: docs/benchmarks.md)
  --no-write           print the tables only
  --keep               keep the temporary folders (server logs)
  --wait-idle SECONDS  before each run, wait up to this long for the machine
                       to be idle (under 0.25 busy cores) (default: 0)
${CLUSTER_HELP}
  -h, --help           this text

Redis, PostgreSQL and etcd are optional: install them with
  apt-get install redis-server postgresql etcd-server
The bench starts and stops them itself, in temporary folders.`;

interface Options {
  targets: Target[];
  cluster: ClusterOptions;
  workloads: ("w1" | "w2" | "w3")[];
  clients: number[];
  holds: number[];
  pgHolds: number[];
  duration: number;
  warmup: number;
  repeat: number;
  client: "raw" | "lib" | "both";
  pgClient: "raw" | "npm" | "both";
  verifyEvery: number;
  serverDir: string;
  logLevel: string | null;
  out: string;
  write: boolean;
  keep: boolean;
  waitIdle: number;
}

function list(text: string): string[] {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function numbers(text: string, flag: string): number[] {
  return list(text).map((s) => {
    const n = Number(s.replace(/_/g, ""));
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`--${flag}: "${s}" is not a positive integer`);
    }
    return n;
  });
}

function parseOptions(args: string[]): Options | null {
  const { values } = parseArgs({
    args,
    options: {
      targets: {
        type: "string",
        default: "pklock,redis,postgres,floor,cluster,v3lock",
      },
      workloads: { type: "string", default: "w1,w2,w3" },
      clients: { type: "string", default: "1,8,64" },
      hold: { type: "string" },
      "pg-hold": { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      repeat: { type: "string" },
      client: { type: "string", default: "raw" },
      "pg-client": { type: "string", default: "raw" },
      "verify-every": { type: "string", default: "16" },
      quick: { type: "boolean", default: false },
      "server-dir": { type: "string", default: REPO },
      "log-level": { type: "string" },
      out: { type: "string", default: `${REPO}/docs/benchmarks.md` },
      "no-write": { type: "boolean", default: false },
      "wait-idle": { type: "string", default: "0" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
      ...CLUSTER_FLAGS,
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return null;
  }
  const quick = values.quick;
  const logLevel = values["log-level"];
  if (
    logLevel !== undefined &&
    !(LOG_LEVELS as readonly string[]).includes(logLevel)
  ) {
    throw new Error(
      `--log-level: expected one of ${
        LOG_LEVELS.join(", ")
      }, not "${logLevel}"`,
    );
  }
  const targets = list(values.targets!) as Target[];
  for (const t of targets) {
    if (
      !["pklock", "redis", "postgres", "floor", ...CLUSTER_TARGETS].includes(t)
    ) {
      throw new Error(`--targets: unknown target "${t}"`);
    }
  }
  const workloads = list(values.workloads!) as Options["workloads"];
  for (const w of workloads) {
    if (!["w1", "w2", "w3"].includes(w)) {
      throw new Error(`--workloads: unknown workload "${w}"`);
    }
  }
  const client = values.client as Options["client"];
  if (!["raw", "lib", "both"].includes(client)) {
    throw new Error(`--client: expected raw, lib or both, not "${client}"`);
  }
  const pgClient = values["pg-client"] as Options["pgClient"];
  if (!["raw", "npm", "both"].includes(pgClient)) {
    throw new Error(
      `--pg-client: expected raw, npm or both, not "${pgClient}"`,
    );
  }
  const seconds = (
    text: string | undefined,
    fallback: number,
    flag: string,
  ) => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!(n > 0)) {
      throw new Error(`--${flag}: "${text}" is not a positive number`);
    }
    return n;
  };
  const holds = numbers(values.hold ?? (quick ? "1000" : "1000,10000"), "hold");
  return {
    targets,
    cluster: clusterOptions(values, numbers),
    workloads,
    clients: numbers(values.clients!, "clients"),
    holds,
    // PostgreSQL forks a backend per connection: 10,000 of them take minutes
    // to start and about 12 GiB, so only on request.
    pgHolds: values["pg-hold"]
      ? numbers(values["pg-hold"], "pg-hold")
      : holds.filter((n) => n <= 1000),
    duration: seconds(values.duration, quick ? 1.5 : 4, "duration"),
    warmup: seconds(values.warmup, quick ? 0.5 : 1, "warmup"),
    repeat: values.repeat
      ? numbers(values.repeat, "repeat")[0]!
      : quick
      ? 1
      : 3,
    client,
    pgClient,
    verifyEvery: Number(values["verify-every"]),
    serverDir: values["server-dir"]!.replace(/\/$/, ""),
    logLevel: logLevel ?? null,
    out: values.out!,
    write: !values["no-write"],
    keep: values.keep!,
    waitIdle: Number(values["wait-idle"]) || 0,
  };
}

/** What the report says about the machine and the software. */
interface Environment {
  date: string;
  command: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  deno: string;
  pklock: string;
  redis: string | null;
  postgres: string | null;
  etcd: string | null;
  fileLimit: number | null;
  /** Busy cores measured over one second before the first run. */
  busyBefore: number;
}

async function git(args: string[], cwd: string): Promise<string | null> {
  try {
    const { success, stdout } = await new Deno.Command("git", {
      args,
      cwd,
      stdout: "piped",
      stderr: "null",
    }).output();
    return success ? decoder.decode(stdout).trim() : null;
  } catch {
    return null;
  }
}

async function describe(
  options: Options,
  redis: string | null,
  postgresBin: string | null,
  args: string[],
): Promise<Environment> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const version = (await Deno.readTextFile(
    `${options.serverDir}/protocol/version.ts`,
  ).catch(() => "")).match(/VERSION = "([^"]+)"/)?.[1] ?? "unknown";
  const head = await git(["rev-parse", "--short", "HEAD"], options.serverDir);
  const dirty = await git(
    // Only the server's own files: the bench and the docs do not change it.
    [
      "status",
      "--porcelain",
      "--untracked-files=no",
      "--",
      "main.ts",
      "mod.ts",
      "deno.json",
      "cli",
      "client",
      "message",
      "protocol",
      "server",
    ],
    options.serverDir,
  );
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    command: ["deno task bench", ...args].join(" "),
    cpus: navigator.hardwareConcurrency,
    cpuModel: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "unknown",
    memoryGiB: Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) /
      1024 / 1024,
    kernel: Deno.osRelease(),
    deno: `Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
    pklock: `pklock ${version}` +
      (head ? ` at ${head}${dirty ? " with uncommitted changes" : ""}` : ""),
    redis: redis ? await versionOf(redis) : null,
    postgres: postgresBin ? await versionOf(`${postgresBin}/postgres`) : null,
    etcd: options.targets.some(isCluster) && CLUSTER_MISSING === null
      ? await versionOf("etcd")
      : null,
    fileLimit: hardFileLimit(),
    busyBefore: await busyNow(),
  };
}

/** How busy the machine is now, in cores, over one second. */
async function busyNow(): Promise<number> {
  const before = snapshotMachine();
  await delay(1000);
  return machineShare(before, snapshotMachine());
}

/** Where the bench writes inside docs/benchmarks.md. */
const BEGIN = "<!-- bench:results:begin -->";
const END = "<!-- bench:results:end -->";

function environmentText(env: Environment): string {
  return [
    `- Date: ${env.date}`,
    `- Command: \`${env.command}\``,
    `- Machine: ${env.cpus} CPUs (${env.cpuModel}), ${
      env.memoryGiB.toFixed(1)
    } GiB memory, Linux ${env.kernel}, open-file hard limit ${
      env.fileLimit ?? "unknown"
    }`,
    `- Machine busy before the first run: ${env.busyBefore.toFixed(2)} cores${
      env.busyBefore > 0.25
        ? " (**not idle**: other load skews the figures)"
        : ""
    }`,
    `- ${env.deno}; ${env.pklock}`,
    `- ${env.redis ?? "Redis: not installed"}`,
    `- ${env.postgres ?? "PostgreSQL: not installed"}`,
    `- ${env.etcd ?? "etcd: not installed or not run"}`,
  ].join("\n");
}

/** Where the bench writes the cluster's tables. */
const CLUSTER_BEGIN = "<!-- bench:cluster:begin -->";
const CLUSTER_END = "<!-- bench:cluster:end -->";

/** The targets that run on servers of their own, not on etcd. */
type LocalTarget = Exclude<Target, ClusterTarget>;

function isCluster(target: Target): target is ClusterTarget {
  return (CLUSTER_TARGETS as readonly string[]).includes(target);
}

/** Replaces the text between two markers of the report, or appends them. */
async function writeReport(
  path: string,
  body: string,
  [BEGIN, END]: [string, string],
): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    text =
      `# Benchmarks\n\nRun with \`deno task bench\`; see bench/main.ts.\n\n${BEGIN}\n${END}\n`;
  }
  const begin = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  const block = `${BEGIN}\n${body}\n${END}`;
  text = begin === -1 || end === -1
    ? `${text.trimEnd()}\n\n${block}\n`
    : text.slice(0, begin) + block + text.slice(end + END.length);
  await Deno.writeTextFile(path, text);
  // Keep the file as `deno fmt` wants it, so `deno task check` stays clean.
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--config", `${REPO}/deno.json`, path],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => {});
}

async function main(args: string[]): Promise<number> {
  let options: Options | null;
  try {
    options = parseOptions(args);
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (options === null) return 0;
  await initClock();
  const files = hardFileLimit() ?? 20_000;
  const redisProgram = options.targets.includes("redis")
    ? await which("redis-server")
    : null;
  const postgresBin = options.targets.includes("postgres")
    ? findPostgres()
    : null;
  const env = await describe(options, redisProgram, postgresBin, args);
  const targets: LocalTarget[] = [];
  const notes: string[] = [];
  const clusterTargets = CLUSTER_MISSING === null
    ? options.targets.filter(isCluster)
    : [];
  if (CLUSTER_MISSING !== null && options.targets.some(isCluster)) {
    notes.push(`Cluster and v3lock skipped: ${CLUSTER_MISSING}.`);
  }
  for (const target of options.targets) {
    if (isCluster(target)) continue;
    if (target === "redis" && redisProgram === null) {
      notes.push(
        "Redis skipped: `redis-server` is not installed (`apt-get install redis-server`).",
      );
      continue;
    }
    if (target === "postgres" && postgresBin === null) {
      notes.push(
        "PostgreSQL skipped: it is not installed (`apt-get install postgresql`).",
      );
      continue;
    }
    if (target === "pklock" && options.client !== "raw") {
      if (options.client === "both") targets.push("pklock");
      targets.push("pklock-lib");
      continue;
    }
    if (target === "postgres" && options.pgClient !== "raw") {
      if (options.pgClient === "both") targets.push("postgres");
      targets.push("postgres-npm");
      continue;
    }
    targets.push(target);
  }
  for (const note of notes) console.error(`bench: ${note}`);
  const biggest = Math.max(...options.holds, ...options.pgHolds);
  if (
    targets.length > 0 && options.workloads.includes("w3") &&
    biggest + 100 > files
  ) {
    notes.push(
      `W3 at N=${biggest} needs more open files than the hard limit (${files}) ` +
        "allows; raise it (ulimit -Hn, as root) to run it.",
    );
  }
  if (targets.length > 0 && files < 50_100) {
    notes.push(
      `Stretch (50,000 held connections): not run. The open-file hard limit ` +
        `is ${files}, so neither the server nor the driver can hold more ` +
        "than about that many sockets; raising it needs root with " +
        "CAP_SYS_RESOURCE (`ulimit -Hn`), and one driver address also has " +
        "only the ephemeral ports of net.ipv4.ip_local_port_range.",
    );
  }
  console.log(environmentText(env) + "\n");

  const tmp = await Deno.makeTempDir({ prefix: "pklock-bench-" });
  let cluster = null as PostgresCluster | null;
  const records: RunRecord[] = [];
  let failed = false;
  const context: Context = { files, waitIdle: options.waitIdle };
  const interrupted = async () => {
    killAll();
    await stopCluster();
    if (!options.keep) {
      try {
        Deno.removeSync(tmp, { recursive: true });
        if (cluster) Deno.removeSync(cluster.dir, { recursive: true });
      } catch {
        // Best effort.
      }
    }
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", interrupted);
  Deno.addSignalListener("SIGTERM", interrupted);

  async function start(
    target: LocalTarget,
    maxConnections: number,
  ): Promise<Server> {
    switch (target) {
      case "pklock":
      case "pklock-lib": {
        const dir = await Deno.makeTempDir({ dir: tmp, prefix: "pklock-" });
        return startPklock({
          root: options!.serverDir,
          dir,
          files,
          logLevel: options!.logLevel,
        });
      }
      case "floor": {
        const dir = await Deno.makeTempDir({ dir: tmp, prefix: "floor-" });
        return startFloor({ root: options!.serverDir, dir, files });
      }
      case "redis": {
        const dir = await Deno.makeTempDir({ dir: tmp, prefix: "redis-" });
        return startRedis({ program: redisProgram!, dir, files });
      }
      case "postgres":
      case "postgres-npm":
        cluster ??= await initPostgres(postgresBin!);
        return startPostgres({ cluster, maxConnections, files });
    }
  }

  function specOf(target: LocalTarget, server: Server): DriverSpec {
    const kind = target === "pklock-lib" || target === "floor"
      ? "pklock"
      : target === "postgres-npm"
      ? "postgres"
      : target;
    const spec: DriverSpec = {
      target: kind,
      port: server.port,
      workload: "w1",
    };
    if (target === "pklock-lib") spec.client = "lib";
    if (target === "postgres-npm") spec.pgClient = "npm";
    if (kind === "postgres") spec.pgUser = "postgres";
    return spec;
  }

  // W3 runs with the raw clients only: it measures the servers, and the
  // probes use the raw clients' queueing.
  const holdsOf = (target: Target) =>
    target === "postgres"
      ? options.pgHolds
      : target === "pklock-lib" || target === "postgres-npm" ||
          target === "floor"
      ? []
      : options.holds;

  try {
    for (const target of targets) {
      // The floor grants every request: it is measured in W1 only.
      const loops = options.workloads.filter((w) =>
        w === "w1" || (w === "w2" && target !== "floor")
      ) as (
        | "w1"
        | "w2"
      )[];
      if (loops.length > 0) {
        const server = await start(target, Math.max(...options.clients) + 64);
        try {
          for (const workload of loops) {
            for (let rep = 1; rep <= options.repeat; rep++) {
              for (const clients of options.clients) {
                if (target === "redis") await flushAll(server.port);
                const record = newRecord(target, workload, clients, rep);
                const spec: DriverSpec = {
                  ...specOf(target, server),
                  workload,
                  clients,
                  duration: options.duration,
                  warmup: options.warmup,
                  verifyEvery: options.verifyEvery,
                };
                records.push(await runDriver(spec, server, record, context));
                console.log(describeRun(record, options.repeat));
              }
            }
          }
        } finally {
          await server.stop();
        }
      }
      if (!options.workloads.includes("w3")) continue;
      for (const hold of holdsOf(target)) {
        const record = newRecord(target, "w3", hold, 1);
        if (hold + 100 > files) {
          record.error = `Needs ${
            hold + 100
          } open files; the hard limit is ${files}`;
          records.push(record);
          console.log(describeRun(record, 1));
          continue;
        }
        if (target === "postgres") {
          // A backend costs about 1.2 MB PSS plus kernel memory; leave room.
          const needKiB = hold * 2 * 1024;
          if (availableKiB() < needKiB + 2 * 1024 * 1024) {
            record.error = `Skipped: ${hold} backends need about ${
              Math.round(needKiB / 1024 / 1024)
            } GiB and only ${
              Math.round(availableKiB() / 1024 / 1024)
            } GiB is available`;
            records.push(record);
            console.log(describeRun(record, 1));
            continue;
          }
        }
        const server = await start(target, hold + 64);
        try {
          const spec: DriverSpec = {
            ...specOf(target, server),
            workload: "w3",
            hold,
            connectConcurrency: 200,
            probeTimeout: target === "redis" ? 2000 : 60_000,
          };
          records.push(await runDriver(spec, server, record, context));
          console.log(describeRun(record, 1));
        } finally {
          await server.stop();
        }
      }
    }
    if (clusterTargets.length > 0) {
      await runCluster({
        ...options,
        ...options.cluster,
        targets: clusterTargets,
        tmp,
        context,
      }, records).catch((error) => {
        failed = true;
        notes.push(`The cluster did not run: ${(error as Error).message}`);
        console.error(`bench: ${notes.at(-1)}`);
      });
    }
  } finally {
    Deno.removeSignalListener("SIGINT", interrupted);
    Deno.removeSignalListener("SIGTERM", interrupted);
    killAll();
    if (options.keep) {
      console.error(
        `bench: kept ${tmp}${cluster ? ` and ${cluster.dir}` : ""}`,
      );
    } else {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
      if (cluster) {
        await Deno.remove(cluster.dir, { recursive: true }).catch(() => {});
      }
    }
  }

  const holds: Record<string, number[]> = {};
  for (const target of targets) holds[target] = holdsOf(target);
  const blocks: [string, [string, string]][] = [];
  if (targets.length > 0) {
    const tables = render(records, {
      targets,
      clients: options.clients,
      holds,
    });
    blocks.push([tables, [BEGIN, END]]);
  }
  if (clusterTargets.length > 0) {
    const tables = renderCluster(records, options.cluster);
    blocks.push([tables, [CLUSTER_BEGIN, CLUSTER_END]]);
  }
  // Nothing ran: the results recorded before stay as they are.
  if (blocks.length === 0) return 1;
  const notesText = notes.length > 0
    ? ["", "### Notes", "", ...notes.map((n) => `- ${n}`)]
    : [];
  for (const [tables, markers] of blocks) {
    console.log("\n" + tables);
    if (!options.write) continue;
    const body = [environmentText(env), "", tables, ...notesText].join("\n");
    await writeReport(options.out, body, markers);
    console.log(`\nbench: results written to ${options.out}`);
  }
  return failed || records.some((r) => r.error !== null) ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
