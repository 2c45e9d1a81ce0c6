/**
 * Turns run records into Markdown tables: the summary with ratios against
 * each peer, the detail of every workload, and the issue's targets checked.
 * Pure: no I/O.
 *
 * @module
 */

import type { DriverResult, W1Result, W2Result, W3Result } from "./driver.ts";
import { median } from "./stats.ts";
import { check, cpu, ms, num, range, ratio, table } from "./format.ts";

/**
 * A column of the tables: a server, and for pklock the client used; `cluster`
 * is pklock's nodes on etcd, `v3lock` etcd's own lock API (bench/cluster.ts).
 */
export type Target =
  | "pklock"
  | "pklock-lib"
  | "floor"
  | "redis"
  | "postgres"
  | "postgres-npm"
  | "cluster"
  | "v3lock";

/** Memory of the server at the W3 marks, in KiB. */
export interface MemorySample {
  /** RSS of the one process, or PSS summed over PostgreSQL's processes. */
  unit: "RSS" | "PSS";
  /** Before the first connection. */
  idle: number;
  /** With every lock held. */
  held: number;
  /** After the mass disconnect and the probes. */
  released: number;
  /** Server processes when every lock was held (PostgreSQL's backends). */
  processes: number;
}

/** One driver run and what the orchestrator sampled around it. */
export interface RunRecord {
  target: Target;
  workload: "w1" | "w2" | "w3" | "drop";
  /** Clients (W1, W2), held connections (W3) or held locks (drop). */
  param: number;
  /** 1-based repetition. */
  rep: number;
  result: DriverResult | null;
  error: string | null;
  /** Server CPU over the measured window, in cores (1 = one core busy). */
  serverCpu: number | null;
  /** Driver CPU over the same window, in cores. */
  driverCpu: number | null;
  /**
   * The rest of the machine's busy CPU over the window, in cores: softirq
   * time not charged to a process, the orchestrator, anything else running.
   */
  restCpu: number | null;
  memory: MemorySample | null;
}

/**
 * A run's record before it runs: no result, no error, nothing sampled.
 *
 * @param target The target.
 * @param workload The workload.
 * @param param Its clients, connections or locks.
 * @param rep Its 1-based repetition.
 * @returns The record.
 */
export function newRecord(
  target: Target,
  workload: RunRecord["workload"],
  param: number,
  rep: number,
): RunRecord {
  return {
    target,
    workload,
    param,
    rep,
    result: null,
    error: null,
    serverCpu: null,
    driverCpu: null,
    restCpu: null,
    memory: null,
  };
}

/** The figures the issue quotes (2026-11-24, one Node driver, 2 cores). */
export const REFERENCE = {
  php: {
    w1: 42_200,
    w2: 7_540,
    w2p99: 13.5,
    w3ReleaseMs: 63, // at N = 1,000; fails above ~1,000
  },
  redis: { w1: 53_300, w2: 3_470, w2p99: 298, w3Kb: 9.75 },
  postgres: { w1: 19_400, w2: 6_310, w2p99: 17.8, w3Kb: 1_134, w3Ms: 10_700 },
} as const;

/** The issue's targets. */
export const TARGETS = {
  w1VsRedis: 1.0,
  w1VsPhp: 1.3,
  w2VsPhp: 1.5,
  w2VsPostgres: 2,
  w2VsRedis: 3,
  w2Jain: 0.99,
  w3Hold: 10_000,
  w3Kb: 8,
  w3AllMs: 250,
  stretch: 50_000,
} as const;

const LABEL: Record<Target, string> = {
  pklock: "pklock",
  "pklock-lib": "pklock (mod.ts client)",
  floor: "Deno socket floor (canned replies, no locks)",
  redis: "Redis",
  postgres: "PostgreSQL",
  "postgres-npm": "PostgreSQL (npm:postgres client)",
  cluster: "pklock cluster",
  v3lock: "etcd v3lock",
};

/** The runs of one cell, and the one whose rate is the median. */
interface Cell<R extends DriverResult> {
  pick: RunRecord & { result: R };
  /** Every repetition's rate (W1, W2). */
  rates: number[];
  runs: number;
}

/**
 * The repetitions of one target, workload and parameter, and the one whose
 * rate is the median (all its figures are reported together).
 */
export function cell<R extends DriverResult>(
  records: readonly RunRecord[],
  target: Target,
  workload: R["workload"],
  param: number,
): Cell<R> | null {
  const runs = records.filter((r) =>
    r.target === target && r.workload === workload && r.param === param &&
    r.result !== null
  ) as (RunRecord & { result: R })[];
  if (runs.length === 0) return null;
  if (workload === "w3" || workload === "drop") {
    return { pick: runs[0]!, rates: [], runs: runs.length };
  }
  const rates = runs.map((r) => (r.result as W1Result | W2Result).rate);
  const middle = median(rates);
  const pick = runs.find((r) =>
    (r.result as W1Result | W2Result).rate === middle
  )!;
  return { pick, rates, runs: runs.length };
}

/** Kilobytes (1,000 bytes) per held lock and connection. */
export function kbPerHold(memory: MemorySample, hold: number): number {
  return ((memory.held - memory.idle) * 1024) / 1000 / hold;
}

/** The slower of the W3 probes: the time by which every probed name was re-granted. */
export function releaseAllMs(result: W3Result): number | null {
  const times = [result.firstMs, result.lastMs];
  if (result.allNames > 0) times.push(result.allMs);
  if (times.some((t) => t === null)) return null;
  return Math.max(...(times as number[]));
}

/** Options of {@linkcode render}. */
export interface RenderOptions {
  /** Targets in column order. */
  targets: readonly Target[];
  /** Client counts of W1 and W2. */
  clients: readonly number[];
  /** Connection counts of W3, per target. */
  holds: Readonly<Record<string, readonly number[]>>;
}

/**
 * Renders every table.
 *
 * @param records The runs.
 * @param options Columns and rows.
 * @returns Markdown.
 */
export function render(
  records: readonly RunRecord[],
  options: RenderOptions,
): string {
  const parts = [
    "### Summary",
    "",
    summary(records, options),
    "",
    "### Targets",
    "",
    targets(records),
    "",
    "### W1 uncontended: each client on its own lock, lock + release pairs",
    "",
    w1Table(records, options),
    "",
    "### W2 contended: every client on one lock",
    "",
    w2Table(records, options),
    "",
    "### W3 hold many: one held lock per connection, then all drop at once",
    "",
    w3Table(records, options),
  ];
  const failures = records.filter((r) => r.error !== null);
  if (failures.length > 0) {
    parts.push("", "### Failed runs", "");
    for (const r of failures) {
      const first = r.error!.split("\n").slice(0, 3).join(" / ").slice(0, 400);
      parts.push(
        `- ${
          LABEL[r.target]
        } ${r.workload.toUpperCase()} ${r.param} (run ${r.rep}): ${first}`,
      );
    }
  }
  return parts.join("\n");
}

function summary(records: readonly RunRecord[], options: RenderOptions) {
  const rows: string[][] = [];
  const has = (t: Target) => options.targets.includes(t);
  for (const c of options.clients) {
    const p = cell<W1Result>(records, "pklock", "w1", c)?.pick.result;
    const r = cell<W1Result>(records, "redis", "w1", c)?.pick.result;
    const g = cell<W1Result>(records, "postgres", "w1", c)?.pick.result;
    const php = c === 64 ? REFERENCE.php.w1 : null;
    rows.push([
      `W1 C=${c} pairs/s`,
      num(p?.rate),
      has("redis") ? num(r?.rate) : "—",
      has("postgres") ? num(g?.rate) : "—",
      php === null ? "—" : num(php),
      ratio(p?.rate, r?.rate),
      ratio(p?.rate, g?.rate),
      ratio(p?.rate, php),
    ]);
  }
  for (const c of options.clients) {
    const p = cell<W2Result>(records, "pklock", "w2", c)?.pick.result;
    const r = cell<W2Result>(records, "redis", "w2", c)?.pick.result;
    const g = cell<W2Result>(records, "postgres", "w2", c)?.pick.result;
    const php = c === 64 ? REFERENCE.php.w2 : null;
    rows.push([
      `W2 C=${c} grants/s`,
      num(p?.rate),
      num(r?.rate),
      num(g?.rate),
      php === null ? "—" : num(php),
      ratio(p?.rate, r?.rate),
      ratio(p?.rate, g?.rate),
      ratio(p?.rate, php),
    ]);
    const phpP99 = c === 64 ? REFERENCE.php.w2p99 : null;
    rows.push([
      `W2 C=${c} wait p99 ms (lower is better)`,
      ms(p?.wait.p99),
      ms(r?.wait.p99),
      ms(g?.wait.p99),
      phpP99 === null ? "—" : ms(phpP99),
      ratio(r?.wait.p99, p?.wait.p99),
      ratio(g?.wait.p99, p?.wait.p99),
      ratio(phpP99, p?.wait.p99),
    ]);
  }
  const holds = [...new Set(Object.values(options.holds).flat())].sort((a, b) =>
    a - b
  );
  for (const n of holds) {
    const [p, r, g] = (["pklock", "redis", "postgres"] as const).map((t) =>
      cell<W3Result>(records, t, "w3", n)?.pick
    );
    const kb = (x: typeof p) =>
      x?.memory ? kbPerHold(x.memory, x.result.hold) : null;
    rows.push([
      `W3 N=${num(n)} KB per lock+conn (lower is better)`,
      num(kb(p), 2),
      num(kb(r), 2),
      num(kb(g), 0),
      "—",
      ratio(kb(r), kb(p)),
      ratio(kb(g), kb(p)),
      "—",
    ]);
    const release = (x: typeof p) => {
      if (x === undefined) return "—";
      const all = releaseAllMs(x.result);
      return all === null
        ? `never (> ${num(x.result.probeTimeout / 1000)} s)`
        : ms(all);
    };
    rows.push([
      `W3 N=${num(n)} release-on-disconnect ms`,
      release(p),
      release(r),
      release(g),
      n === 1000 ? ms(REFERENCE.php.w3ReleaseMs) : "fails",
      "—",
      "—",
      "—",
    ]);
  }
  return table([
    "workload",
    "pklock",
    "Redis",
    "PostgreSQL",
    "PHP (reference)",
    "pklock ÷ Redis",
    "pklock ÷ PostgreSQL",
    "pklock ÷ PHP",
  ], rows) + "\n\nRatios above 1× favour pklock (for latency and memory rows " +
    "they are the peer's figure over pklock's). PHP figures are the issue's " +
    "reference measurements, not re-measured here." +
    floorLine(records, options);
}

/**
 * W1 of the Deno socket floor, next to pklock's and Redis's: how much of the
 * gap is the runtime's, how much pklock's.
 */
function floorLine(records: readonly RunRecord[], options: RenderOptions) {
  const parts: string[] = [];
  for (const c of options.clients) {
    const f = cell<W1Result>(records, "floor", "w1", c)?.pick.result;
    if (f === undefined) continue;
    const p = cell<W1Result>(records, "pklock", "w1", c)?.pick.result;
    const r = cell<W1Result>(records, "redis", "w1", c)?.pick.result;
    parts.push(
      `C=${c}: ${num(f.rate)} pairs/s (${ratio(f.rate, r?.rate)} Redis; ` +
        `pklock reaches ${ratio(p?.rate, f.rate)} of it)`,
    );
  }
  if (parts.length === 0) return "";
  return "\n\nThe Deno socket floor, a server that answers each W1 request " +
    "with a canned reply after one read and before the next (no JSON, no " +
    `lock table), in W1: ${parts.join("; ")}.`;
}

function targets(records: readonly RunRecord[]): string {
  const rows: string[][] = [];
  const p1 = cell<W1Result>(records, "pklock", "w1", 64)?.pick.result;
  const r1 = cell<W1Result>(records, "redis", "w1", 64)?.pick.result;
  const f1 = cell<W1Result>(records, "floor", "w1", 64)?.pick.result;
  rows.push([
    "W1 C=64 ≥ 1.0× Redis",
    `${num(p1?.rate)} vs ${num(r1?.rate)} pairs/s (${
      ratio(p1?.rate, r1?.rate)
    })` +
    (f1 === undefined
      ? ""
      : `; Deno socket floor ${num(f1.rate)} (${
        ratio(f1.rate, r1?.rate)
      } Redis)`),
    check(p1 && r1 ? p1.rate >= TARGETS.w1VsRedis * r1.rate : null),
  ]);
  rows.push([
    "W1 C=64 ≥ 1.3× PHP",
    `${num(p1?.rate)} vs ${num(REFERENCE.php.w1)} pairs/s (${
      ratio(p1?.rate, REFERENCE.php.w1)
    })`,
    check(p1 ? p1.rate >= TARGETS.w1VsPhp * REFERENCE.php.w1 : null),
  ]);
  const p2 = cell<W2Result>(records, "pklock", "w2", 64)?.pick.result;
  const r2 = cell<W2Result>(records, "redis", "w2", 64)?.pick.result;
  const g2 = cell<W2Result>(records, "postgres", "w2", 64)?.pick.result;
  rows.push([
    "W2 C=64 ≥ 1.5× PHP",
    `${num(p2?.rate)} vs ${num(REFERENCE.php.w2)} grants/s (${
      ratio(p2?.rate, REFERENCE.php.w2)
    })`,
    check(p2 ? p2.rate >= TARGETS.w2VsPhp * REFERENCE.php.w2 : null),
  ]);
  rows.push([
    "W2 C=64 ≥ 2× PostgreSQL",
    `${num(p2?.rate)} vs ${num(g2?.rate)} grants/s (${
      ratio(p2?.rate, g2?.rate)
    })`,
    check(p2 && g2 ? p2.rate >= TARGETS.w2VsPostgres * g2.rate : null),
  ]);
  rows.push([
    "W2 C=64 ≥ 3× Redis",
    `${num(p2?.rate)} vs ${num(r2?.rate)} grants/s (${
      ratio(p2?.rate, r2?.rate)
    })`,
    check(p2 && r2 ? p2.rate >= TARGETS.w2VsRedis * r2.rate : null),
  ]);
  rows.push([
    "W2 C=64 wait p99 ≤ PHP",
    `${ms(p2?.wait.p99)} vs ${ms(REFERENCE.php.w2p99)} ms`,
    check(p2 ? p2.wait.p99 <= REFERENCE.php.w2p99 : null),
  ]);
  rows.push([
    "W2 C=64 Jain ≥ 0.99, no overlap",
    p2
      ? `Jain ${num(p2.jain, 4)}, ${p2.overlaps} overlaps in ${
        num(p2.verifiedHolds)
      } verified holds, ${p2.tokenRegressions ?? 0} token regressions`
      : "—",
    check(
      p2
        ? p2.jain >= TARGETS.w2Jain && p2.overlaps === 0 &&
          !p2.tokenRegressions
        : null,
    ),
  ]);
  const w3 = cell<W3Result>(records, "pklock", "w3", TARGETS.w3Hold)?.pick;
  rows.push([
    "W3 N=10,000 every lock granted",
    w3 ? `${num(w3.result.granted)} of ${num(w3.result.hold)}` : "—",
    check(w3 ? w3.result.granted === w3.result.hold : null),
  ]);
  const kb = w3?.memory ? kbPerHold(w3.memory, w3.result.hold) : null;
  rows.push([
    "W3 N=10,000 ≤ 8 KB RSS per lock+conn",
    `${num(kb, 2)} KB`,
    check(kb === null ? null : kb <= TARGETS.w3Kb),
  ]);
  const all = w3 ? releaseAllMs(w3.result) : null;
  rows.push([
    "W3 N=10,000 all names re-granted ≤ 250 ms",
    w3
      ? `${ms(all)} ms (first ${ms(w3.result.firstMs)}, last ${
        ms(w3.result.lastMs)
      }, all ${num(w3.result.allNames + 2)} names ${ms(all)})`
      : "—",
    check(w3 ? all !== null && all <= TARGETS.w3AllMs : null),
  ]);
  const biggest = records.filter((r) =>
    r.target === "pklock" && r.workload === "w3" && r.result !== null
  ).map((r) => r.result as W3Result).filter((r) => r.granted === r.hold)
    .reduce((max, r) => Math.max(max, r.hold), 0);
  rows.push([
    "Stretch: 50,000 held connections",
    `largest N fully granted: ${num(biggest)}`,
    biggest >= TARGETS.stretch ? "**met**" : "not run (see notes)",
  ]);
  return table(["target", "measured", "result"], rows);
}

const CPU_NOTE = "\n\nCPU is in percent of one core over the measured window " +
  "(the machine has two): the server's process (PostgreSQL: all its " +
  "processes), the driver's, and the rest of the machine's busy time " +
  "(interrupts, the orchestrator, anything else; approximate). ⚠ marks a " +
  "run during which something else kept more than 30% of a core busy.";

/** CPU microseconds per operation: cores divided by operations per second. */
function perOp(cores: number | null, rate: number): string {
  return cores === null || rate === 0 ? "—" : num((cores / rate) * 1e6, 1);
}

function w1Table(records: readonly RunRecord[], options: RenderOptions) {
  const rows: string[][] = [];
  for (const c of options.clients) {
    for (const target of options.targets) {
      const found = cell<W1Result>(records, target, "w1", c);
      if (found === null) continue;
      const { result } = found.pick;
      rows.push([
        `${LABEL[target]}, C=${c}`,
        num(result.rate) + range(found.rates),
        ms(result.latency.p50),
        ms(result.latency.p99),
        ms(result.latency.max),
        cpu(found.pick),
        perOp(found.pick.serverCpu, result.rate),
        perOp(found.pick.driverCpu, result.rate),
      ]);
    }
  }
  return table([
    "target",
    "pairs/s (min–max)",
    "pair p50 ms",
    "pair p99 ms",
    "pair max ms",
    "CPU server / driver / rest",
    "server CPU µs per pair",
    "driver CPU µs per pair",
  ], rows) + CPU_NOTE;
}

function w2Table(records: readonly RunRecord[], options: RenderOptions) {
  const rows: string[][] = [];
  for (const c of options.clients) {
    for (const target of options.targets) {
      const found = cell<W2Result>(records, target, "w2", c);
      if (found === null) continue;
      const { result } = found.pick;
      const counts = result.perClient;
      rows.push([
        `${LABEL[target]}, C=${c}`,
        num(result.rate) + range(found.rates),
        ms(result.wait.p50),
        ms(result.wait.p99),
        ms(result.wait.max),
        num(result.jain, 4),
        `${num(Math.min(...counts))}–${num(Math.max(...counts))}`,
        `${result.overlaps} / ${num(result.verifiedHolds)}` +
        (result.tokenRegressions === null
          ? ""
          : `, ${result.tokenRegressions} token regr.`),
        cpu(found.pick),
      ]);
    }
  }
  return table([
    "target",
    "grants/s (min–max)",
    "wait p50 ms",
    "wait p99 ms",
    "wait max ms",
    "Jain",
    "grants per client",
    "overlaps / verified holds",
    "CPU server / driver / rest",
  ], rows) + CPU_NOTE;
}

function w3Table(records: readonly RunRecord[], options: RenderOptions) {
  const rows: string[][] = [];
  for (const target of options.targets) {
    for (const n of options.holds[target] ?? []) {
      const found = cell<W3Result>(records, target, "w3", n);
      if (found === null) continue;
      const { result, memory } = found.pick;
      const never = (t: number | null) =>
        t === null ? `never (> ${num(result.probeTimeout / 1000)} s)` : ms(t);
      rows.push([
        `${LABEL[target]}, N=${num(n)}`,
        `${num(result.granted)}${
          result.failed ? ` (${result.failed} failed)` : ""
        }`,
        num(result.connectGrantMs / 1000, 2),
        memory
          ? `${num(memory.idle / 1024, 1)} → ${
            num(memory.held / 1024, 1)
          } ${memory.unit}` +
            (memory.processes > 1 ? `, ${num(memory.processes)} processes` : "")
          : "—",
        memory ? num(kbPerHold(memory, result.hold), 2) : "—",
        ms(result.closeLoopMs),
        never(result.firstMs),
        never(result.lastMs),
        result.allNames > 0 ? never(result.allMs) : "—",
        memory ? num(memory.released / 1024, 1) : "—",
      ]);
    }
  }
  return table([
    "target",
    "granted",
    "connect + grant all, s",
    "server MiB idle → held",
    "KB per lock+conn",
    "drop: driver closed all, ms",
    "first name re-granted, ms",
    "last name, ms",
    "every other name, ms",
    "MiB after release",
  ], rows) + "\n\nRe-grant times count from the moment the driver starts " +
    "closing the holders' sockets; closing them all takes the driver the " +
    '"drop" time by itself, so no server can re-grant every name sooner.';
}
