/**
 * The cluster's tables: pklock's nodes against etcd's v3lock with the ratio
 * of each row and the targets checked, then every run. Pure: no I/O.
 *
 * @module
 */

import type { DropResult } from "./drop.ts";
import type { W1Result, W2Result } from "./driver.ts";
import { check, cpu, ms, num, range, ratio, table } from "./format.ts";
import { cell, type RunRecord } from "./report.ts";
import { median } from "./stats.ts";

/** The cluster targets. */
export const CLUSTER_GOALS = {
  /** Uncontended pairs/s, cluster ÷ v3lock, at least. */
  uncontended: 1.0,
  /** Contended grants/s, cluster ÷ v3lock, at least. */
  contended: 2,
  /** Contended hand-off p99, cluster ÷ v3lock, at most. */
  handOffP99: 0.5,
  /** The last re-grant after the drop, in ms, at most. */
  dropMs: 200,
} as const;

/** Options of {@linkcode renderCluster}. */
export interface ClusterRenderOptions {
  /** W1 client counts. */
  clients: readonly number[];
  /** W2 client counts. */
  contenders: readonly number[];
  /** Locks of the dropped connection. */
  locks: number;
}

/** Overlaps and token regressions found in a set of runs. */
export interface Violations {
  /** Grants seen while another hold lasted. */
  overlaps: number;
  /** Grants whose token was not above the previous holder's. */
  tokenRegressions: number;
  /** Runs that checked (W2 and drop runs with a result). */
  runs: number;
}

/**
 * Sums the violations of one target's W2 and drop runs.
 *
 * @param records Every run.
 * @param target The target.
 * @returns The sums.
 */
export function violations(
  records: readonly RunRecord[],
  target: RunRecord["target"],
): Violations {
  const sum: Violations = { overlaps: 0, tokenRegressions: 0, runs: 0 };
  for (const r of records) {
    if (r.target !== target || r.result === null) continue;
    if (r.result.workload !== "w2" && r.result.workload !== "drop") continue;
    sum.overlaps += r.result.overlaps;
    sum.tokenRegressions += r.result.tokenRegressions ?? 0;
    sum.runs++;
  }
  return sum;
}

/**
 * The drop run with the median time to the last re-grant (a run that failed
 * or never re-granted everything counts as the slowest).
 *
 * @param records Every run.
 * @param target The target.
 * @param locks The locks of the dropped connection.
 * @returns That run's result, `null` when that run failed, `undefined` when
 *   there is no run.
 */
export function medianDrop(
  records: readonly RunRecord[],
  target: RunRecord["target"],
  locks: number,
): DropResult | null | undefined {
  const runs = records.filter((r) =>
    r.target === target && r.workload === "drop" && r.param === locks
  ).map((r) => r.result as DropResult | null);
  if (runs.length === 0) return undefined;
  const last = (d: DropResult | null) =>
    d !== null && d.granted === d.locks && d.lastMs !== null
      ? d.lastMs
      : Infinity;
  // A failed run and an incomplete one both count as the slowest: the
  // incomplete one, which says how far it got, stands for them.
  const middle = median(runs.map(last));
  const picks = runs.filter((d) => last(d) === middle);
  return picks.find((d) => d !== null) ?? null;
}

/**
 * Renders the cluster's summary, its targets and every run.
 *
 * @param records The cluster's and v3lock's runs.
 * @param options Rows.
 * @returns Markdown.
 */
export function renderCluster(
  records: readonly RunRecord[],
  options: ClusterRenderOptions,
): string {
  const rows: string[][] = [];
  for (const c of options.clients) {
    const p = cell<W1Result>(records, "cluster", "w1", c);
    const v = cell<W1Result>(records, "v3lock", "w1", c);
    const a = p?.pick.result.rate;
    const b = v?.pick.result.rate;
    rows.push([
      `uncontended C=${c} pairs/s`,
      num(a) + range(p?.rates ?? []),
      num(b) + range(v?.rates ?? []),
      ratio(a, b),
      `≥ ${num(CLUSTER_GOALS.uncontended, 1)}×`,
      check(a && b ? a >= CLUSTER_GOALS.uncontended * b : null),
    ]);
  }
  for (const c of options.contenders) {
    const p = cell<W2Result>(records, "cluster", "w2", c);
    const v = cell<W2Result>(records, "v3lock", "w2", c);
    const a = p?.pick.result;
    const b = v?.pick.result;
    rows.push([
      `contended C=${c} grants/s`,
      num(a?.rate) + range(p?.rates ?? []),
      num(b?.rate) + range(v?.rates ?? []),
      ratio(a?.rate, b?.rate),
      `≥ ${num(CLUSTER_GOALS.contended, 1)}×`,
      check(a && b ? a.rate >= CLUSTER_GOALS.contended * b.rate : null),
    ]);
    rows.push([
      `contended C=${c} hand-off p50 ms`,
      ms(a?.handOff.p50),
      ms(b?.handOff.p50),
      ratio(a?.handOff.p50, b?.handOff.p50),
      "—",
      "—",
    ]);
    rows.push([
      `contended C=${c} hand-off p99 ms (lower is better)`,
      ms(a?.handOff.p99),
      ms(b?.handOff.p99),
      ratio(a?.handOff.p99, b?.handOff.p99),
      `≤ ${num(CLUSTER_GOALS.handOffP99, 2)}×`,
      check(
        a && b
          ? a.handOff.p99 <= CLUSTER_GOALS.handOffP99 * b.handOff.p99
          : null,
      ),
    ]);
  }
  const dp = medianDrop(records, "cluster", options.locks);
  const dv = medianDrop(records, "v3lock", options.locks);
  const complete = (d: DropResult | null | undefined) =>
    d && d.granted === d.locks ? d.lastMs : null;
  const lastMs = (d: DropResult | null | undefined) =>
    d === undefined
      ? "—"
      : d === null
      ? "failed"
      : d.granted === d.locks
      ? ms(d.lastMs)
      : `${num(d.granted)} of ${num(d.locks)}`;
  rows.push([
    `disconnect: ${num(options.locks)} locks re-granted on another node, ms`,
    lastMs(dp),
    lastMs(dv),
    ratio(complete(dp), complete(dv)),
    `≤ ${CLUSTER_GOALS.dropMs} ms`,
    check(
      dp === undefined
        ? null
        : dp !== null && dp.granted === dp.locks && dp.lastMs !== null &&
          dp.lastMs <= CLUSTER_GOALS.dropMs,
    ),
  ]);
  const vp = violations(records, "cluster");
  const vv = violations(records, "v3lock");
  const text = (v: Violations) =>
    v.runs === 0
      ? "—"
      : `${v.overlaps} / ${v.tokenRegressions} in ${v.runs} runs`;
  rows.push([
    "violations: overlaps / token regressions",
    text(vp),
    text(vv),
    "—",
    "0",
    check(vp.runs === 0 ? null : vp.overlaps + vp.tokenRegressions === 0),
  ]);
  return [
    table([
      "workload",
      "pklock cluster",
      "etcd v3lock",
      "cluster ÷ v3lock",
      "target",
      "result",
    ], rows),
    "",
    "Rates are the median run's (the range of every run's in parentheses); " +
    "its hand-off figures are reported with it. The disconnect row is the " +
    "median run's time from closing the holder's connection (v3lock: " +
    "revoking its lease) to the last of the waiter's grants. Violations " +
    "are summed over every contended and disconnect run.",
    "",
    "#### Every cluster run",
    "",
    runsTable(records),
  ].join("\n");
}

/** The figures of one run, as the table of every run shows them. */
function runRow(r: RunRecord): string[] {
  const label = `${r.target === "cluster" ? "pklock cluster" : "etcd v3lock"}`;
  const head = [label, r.workload.toUpperCase(), num(r.param), String(r.rep)];
  if (r.result === null) {
    return [...head, `failed: ${(r.error ?? "").split("\n")[0]}`, "", "", ""];
  }
  const result = r.result;
  switch (result.workload) {
    case "w1":
      return [
        ...head,
        `${num(result.rate)} pairs/s`,
        `pair ${ms(result.latency.p50)} / ${ms(result.latency.p99)}`,
        "—",
        cpu(r),
      ];
    case "w2":
      return [
        ...head,
        `${num(result.rate)} grants/s`,
        `hand-off ${ms(result.handOff.p50)} / ${ms(result.handOff.p99)}`,
        `${result.overlaps} / ${result.tokenRegressions ?? "—"} (${
          num(result.verifiedHolds)
        } verified holds)`,
        cpu(r),
      ];
    case "drop":
      return [
        ...head,
        `last re-grant ${ms(result.lastMs)} ms (${num(result.granted)} of ${
          num(result.locks)
        })`,
        `first ${ms(result.firstMs)}; held in ${ms(result.holdMs)}, queued in ${
          ms(result.queueMs)
        }`,
        `${result.overlaps} / ${result.tokenRegressions}`,
        "—",
      ];
    default:
      return [...head, "—", "—", "—", "—"];
  }
}

function runsTable(records: readonly RunRecord[]): string {
  const rows = records.filter((r) =>
    r.target === "cluster" || r.target === "v3lock"
  ).map(runRow);
  return table([
    "target",
    "workload",
    "C or locks",
    "run",
    "rate",
    "p50 / p99 ms",
    "overlaps / token regressions",
    "CPU server / driver / rest",
  ], rows) +
    "\n\nCPU is in percent of one core over the measured window: for the " +
    "cluster its nodes and the etcd members together, for v3lock the " +
    "members; then the driver, and the rest of the machine.";
}
