/**
 * How the bench's tables write numbers, times, ratios and verdicts. Pure: no
 * I/O.
 *
 * @module
 */

import type { RunRecord } from "./report.ts";

/**
 * A number in the tables: grouped thousands, `digits` decimals, "—" when
 * missing.
 *
 * @param value The number.
 * @param digits Decimal digits.
 * @returns Its text.
 */
export function num(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return "—";
  }
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/**
 * Milliseconds with three significant digits or so.
 *
 * @param value The time.
 * @returns Its text.
 */
export function ms(value: number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  if (value >= 100) return num(value, 0);
  if (value >= 10) return num(value, 1);
  return num(value, 2);
}

/**
 * `a ÷ b` as "1.23×", "—" when either is missing.
 *
 * @param a The numerator.
 * @param b The denominator.
 * @returns Its text.
 */
export function ratio(
  a: number | null | undefined,
  b: number | null | undefined,
): string {
  if (a == null || b == null || b === 0) return "—";
  return `${num(a / b, 2)}×`;
}

/** A share of one core as a percentage. */
function pct(value: number | null): string {
  return value === null ? "—" : `${Math.round(value * 100)}%`;
}

/**
 * A Markdown table, the first column left-aligned, the others right.
 *
 * @param header The column titles.
 * @param rows The cells.
 * @returns Markdown.
 */
export function table(header: string[], rows: string[][]): string {
  const lines = [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i === 0 ? "---" : "--:")).join(" | ")} |`,
  ];
  for (const row of rows) lines.push(`| ${row.join(" | ")} |`);
  return lines.join("\n");
}

/**
 * A target's verdict.
 *
 * @param ok Whether it was met; `null` when not measured.
 * @returns Its text.
 */
export function check(ok: boolean | null): string {
  return ok === null ? "not measured" : ok ? "**met**" : "**missed**";
}

/** Rest-of-machine CPU above which a run is flagged as disturbed. */
const DISTURBED = 0.3;

/**
 * A run's CPU: server, driver and the rest of the machine, flagged when
 * the rest was busy.
 *
 * @param r The run.
 * @returns Its text.
 */
export function cpu(r: RunRecord): string {
  const rest = r.restCpu === null ? null : Math.max(0, r.restCpu);
  const flag = rest !== null && rest > DISTURBED ? " ⚠" : "";
  return `${pct(r.serverCpu)} / ${pct(r.driverCpu)} / ${pct(rest)}${flag}`;
}

/**
 * The range of the repetitions' rates, for a cell of more than one.
 *
 * @param rates The rates.
 * @returns " (min–max)", or nothing.
 */
export function range(rates: number[]): string {
  if (rates.length < 2) return "";
  return ` (${num(Math.min(...rates))}–${num(Math.max(...rates))})`;
}

/**
 * One line per run, printed while the bench goes.
 *
 * @param record The run.
 * @param runs How many repetitions its cell has.
 * @returns The line.
 */
export function describeRun(record: RunRecord, runs: number): string {
  const param = record.workload === "w3"
    ? "N"
    : record.workload === "drop"
    ? "L"
    : "C";
  const head =
    `${record.target} ${record.workload.toUpperCase()} ${param}=${record.param}${
      runs > 1 ? ` run ${record.rep}/${runs}` : ""
    }`;
  if (record.error !== null) {
    return `${head}: FAILED: ${record.error.split("\n")[0]}`;
  }
  const cpu = record.serverCpu === null
    ? ""
    : `, CPU server ${Math.round(record.serverCpu * 100)}% driver ${
      Math.round((record.driverCpu ?? 0) * 100)
    }% rest ${Math.round((record.restCpu ?? 0) * 100)}%`;
  const r = record.result!;
  switch (r.workload) {
    case "w1":
      return `${head}: ${
        Math.round(r.rate)
      } pairs/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms${cpu}`;
    case "w2":
      return `${head}: ${
        Math.round(r.rate)
      } grants/s, wait p99 ${r.wait.p99} ms, max ${r.wait.max} ms, hand-off p50 ${r.handOff.p50} ms, p99 ${r.handOff.p99} ms, Jain ${r.jain}, overlaps ${r.overlaps}, token regressions ${
        r.tokenRegressions ?? "—"
      }${cpu}`;
    case "w3": {
      const m = record.memory;
      const kb = m ? ((m.held - m.idle) * 1.024 / r.hold).toFixed(2) : "?";
      return `${head}: ${r.granted} granted in ${
        Math.round(r.connectGrantMs)
      } ms, ${kb} KB per lock+conn, drop ${
        Math.round(r.closeLoopMs)
      } ms, re-granted first ${r.firstMs} ms, last ${r.lastMs} ms, all ${r.allMs} ms`;
    }
    case "drop":
      return `${head}: held in ${Math.round(r.holdMs)} ms, queued in ${
        Math.round(r.queueMs)
      } ms; ${r.granted} re-granted after the drop, first ${r.firstMs} ms, last ${r.lastMs} ms, overlaps ${r.overlaps}, token regressions ${r.tokenRegressions}`;
  }
}
