/**
 * Process accounting from /proc (Linux only): CPU time, resident and
 * proportional set sizes, of one process or of a process and its children
 * (PostgreSQL runs one process per connection).
 *
 * @module
 */

const decoder = new TextDecoder();

/** Clock ticks per second, the unit of CPU times in /proc/PID/stat. */
let ticksPerSecond = 100;

/** Reads `getconf CLK_TCK` once; the default (100) is nearly universal. */
export async function initClock(): Promise<void> {
  try {
    const { stdout } = await new Deno.Command("getconf", {
      args: ["CLK_TCK"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const value = Number(decoder.decode(stdout).trim());
    if (Number.isInteger(value) && value > 0) ticksPerSecond = value;
  } catch {
    // Keep 100.
  }
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/** The fields of /proc/PID/stat after the command name. */
function statFields(pid: number): string[] | null {
  const text = readText(`/proc/${pid}/stat`);
  if (text === null) return null;
  // The command name is in parentheses and may hold spaces.
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/**
 * A process's CPU time so far (user + system, all threads), with the CPU
 * time of its children that it has reaped.
 *
 * @param pid The process.
 * @returns Seconds, and reaped children's seconds; `null` if it is gone.
 */
export function cpuSeconds(
  pid: number,
): { own: number; reaped: number } | null {
  const fields = statFields(pid);
  if (fields === null) return null;
  // Fields 14-17 of stat (utime, stime, cutime, cstime) are 11-14 here.
  const [utime, stime, cutime, cstime] = [11, 12, 13, 14].map((i) =>
    Number(fields[i])
  ) as [number, number, number, number];
  return {
    own: (utime + stime) / ticksPerSecond,
    reaped: (cutime + cstime) / ticksPerSecond,
  };
}

/**
 * The children of a process.
 *
 * @param pid The parent.
 * @returns The pids whose parent it is.
 */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const child = Number(entry.name);
    if (!Number.isInteger(child) || child === pid) continue;
    const fields = statFields(child);
    // Field 4 of stat (ppid) is 1 here.
    if (fields !== null && Number(fields[1]) === pid) children.push(child);
  }
  return children;
}

/** CPU times of a process tree at one instant. */
export interface CpuSnapshot {
  /** When it was taken (`performance.now()`). */
  at: number;
  /** Each live process's own CPU seconds. */
  own: Map<number, number>;
  /** The root's reaped children's CPU seconds. */
  reaped: number;
}

/**
 * Samples the CPU time of a process, and optionally of its children.
 *
 * @param pid The root process.
 * @param withChildren Whether to include its current children.
 * @returns The snapshot.
 */
export function snapshotCpu(pid: number, withChildren = false): CpuSnapshot {
  const own = new Map<number, number>();
  const root = cpuSeconds(pid);
  if (root !== null) own.set(pid, root.own);
  if (withChildren) {
    for (const child of childrenOf(pid)) {
      const cpu = cpuSeconds(child);
      if (cpu !== null) own.set(child, cpu.own);
    }
  }
  return { at: performance.now(), own, reaped: root?.reaped ?? 0 };
}

/**
 * CPU used between two snapshots, as a share of one core.
 *
 * @param before The earlier snapshot.
 * @param after The later one.
 * @returns CPU seconds per second: 1 is one core fully busy.
 */
export function cpuShare(before: CpuSnapshot, after: CpuSnapshot): number {
  let seconds = after.reaped - before.reaped;
  for (const [pid, cpu] of after.own) {
    seconds += cpu - (before.own.get(pid) ?? 0);
  }
  const elapsed = (after.at - before.at) / 1000;
  return elapsed > 0 ? seconds / elapsed : 0;
}

/** Busy CPU time of the whole machine at one instant. */
export interface MachineSnapshot {
  /** When it was taken (`performance.now()`). */
  at: number;
  /** CPU seconds not idle, summed over all CPUs. */
  busy: number;
}

/**
 * Samples the machine's busy time from /proc/stat (everything but idle and
 * iowait, interrupts and softirqs included).
 *
 * @returns The snapshot.
 */
export function snapshotMachine(): MachineSnapshot {
  const line = readText("/proc/stat")?.split("\n", 1)[0] ?? "";
  const [, ...fields] = line.trim().split(/\s+/);
  const ticks = fields.slice(0, 8).map(Number);
  const busy = ticks.reduce(
    (sum, t, i) => (i === 3 || i === 4 ? sum : sum + t),
    0,
  );
  return { at: performance.now(), busy: busy / ticksPerSecond };
}

/**
 * Machine CPU used between two snapshots, in cores.
 *
 * @param before The earlier snapshot.
 * @param after The later one.
 * @returns Busy CPU seconds per second over all CPUs.
 */
export function machineShare(
  before: MachineSnapshot,
  after: MachineSnapshot,
): number {
  const elapsed = (after.at - before.at) / 1000;
  return elapsed > 0 ? (after.busy - before.busy) / elapsed : 0;
}

/**
 * A process's resident set size.
 *
 * @param pid The process.
 * @returns VmRSS in KiB, or 0 if it is gone.
 */
export function rssKiB(pid: number): number {
  const text = readText(`/proc/${pid}/status`);
  const match = text?.match(/^VmRSS:\s+(\d+) kB$/m);
  return match ? Number(match[1]) : 0;
}

/**
 * The proportional set size of a process tree: shared pages (PostgreSQL's
 * shared buffers, its code) are divided among the processes mapping them, so
 * the sum does not count them once per backend as RSS would.
 *
 * @param pid The root process.
 * @returns The sum of Pss over the root and its children, in KiB.
 */
export function treePssKiB(pid: number): number {
  let total = 0;
  for (const member of [pid, ...childrenOf(pid)]) {
    const text = readText(`/proc/${member}/smaps_rollup`);
    const match = text?.match(/^Pss:\s+(\d+) kB$/m);
    if (match) total += Number(match[1]);
  }
  return total;
}

/**
 * The memory the system can still hand out.
 *
 * @returns MemAvailable in KiB.
 */
export function availableKiB(): number {
  const match = readText("/proc/meminfo")?.match(
    /^MemAvailable:\s+(\d+) kB$/m,
  );
  return match ? Number(match[1]) : 0;
}

/**
 * The hard limit on open files of this process, which children inherit and
 * cannot exceed without CAP_SYS_RESOURCE.
 *
 * @returns The limit, or `null` when unknown.
 */
export function hardFileLimit(): number | null {
  const text = readText("/proc/self/limits");
  const match = text?.match(/^Max open files\s+\d+\s+(\d+)/m);
  return match ? Number(match[1]) : null;
}
