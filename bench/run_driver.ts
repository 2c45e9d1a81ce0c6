/**
 * Runs one driver process (bench/driver.ts) against a running server and
 * samples the CPU of both, and the server's memory, at the driver's marks.
 *
 * @module
 */

import type { DriverResult, DriverSpec } from "./driver.ts";
import {
  childrenOf,
  cpuShare,
  type CpuSnapshot,
  machineShare,
  type MachineSnapshot,
  rssKiB,
  snapshotCpu,
  snapshotMachine,
  treePssKiB,
} from "./proc.ts";
import { delay } from "../message/io.ts";
import type { RunRecord } from "./report.ts";
import { type Server, track } from "./servers.ts";

const BENCH_DIR = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const encoder = new TextEncoder();

/** Reads a child's standard output line by line. */
async function* lines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) !== -1) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
  if (buffered !== "") yield buffered;
}

function memoryOf(server: Server): number {
  return server.tree ? treePssKiB(server.pid) : rssKiB(server.pid);
}

/** Everything a run needs besides its spec. */
export interface Context {
  /** The open-file limit of the driver. */
  files: number;
  /** Seconds to wait, at most, for an idle machine before the run. */
  waitIdle: number;
}

/** Busy cores above which the machine does not count as idle. */
const IDLE_CORES = 0.25;

/**
 * Waits, up to `seconds`, until the machine has been idle for half a second:
 * other load on a two-core machine skews every figure.
 */
async function waitIdle(seconds: number): Promise<void> {
  const deadline = performance.now() + seconds * 1000;
  let warned = false;
  while (performance.now() < deadline) {
    const before = snapshotMachine();
    await delay(500);
    const busy = machineShare(before, snapshotMachine());
    if (busy < IDLE_CORES) return;
    if (!warned) {
      console.error(
        `bench: waiting for the machine to go idle (${
          busy.toFixed(2)
        } cores busy)`,
      );
      warned = true;
    }
  }
}

/** The CPU times of a server's processes, `others` included. */
function snapshotServer(server: Server): CpuSnapshot {
  const snapshot = snapshotCpu(server.pid, server.tree);
  for (const pid of server.others ?? []) {
    const other = snapshotCpu(pid);
    for (const [p, cpu] of other.own) snapshot.own.set(p, cpu);
    snapshot.reaped += other.reaped;
  }
  return snapshot;
}

/**
 * Runs one driver process against a server and samples both around the
 * driver's marks.
 *
 * @param spec What the driver runs.
 * @param server The server (its processes are sampled).
 * @param record Where the figures go; returned.
 * @param context The limits of the run.
 * @returns The record, with the driver's result or its error.
 */
export async function runDriver(
  spec: DriverSpec,
  server: Server,
  record: RunRecord,
  context: Context,
): Promise<RunRecord> {
  if (context.waitIdle > 0) await waitIdle(context.waitIdle);
  const child = track(
    new Deno.Command("bash", {
      args: [
        "-c",
        'ulimit -n "$1" || exit 97; shift; exec "$@"',
        "bash",
        String(context.files),
        Deno.execPath(),
        "run",
        "-A",
        "--config",
        `${REPO}/deno.json`,
        `${BENCH_DIR}/driver.ts`,
        JSON.stringify(spec),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  const stderr = new Response(child.stderr).text();
  const stdin = child.stdin.getWriter();
  const limit = spec.workload === "w3" || spec.workload === "drop"
    ? 900_000
    : ((spec.warmup ?? 1) + (spec.duration ?? 4)) * 1000 + 120_000;
  const timer = setTimeout(() => {
    record.error = `Driver timed out after ${limit / 1000} s`;
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
  }, limit);
  let serverStart: CpuSnapshot | null = null;
  let driverStart: CpuSnapshot | null = null;
  let machineStart: MachineSnapshot | null = null;
  const memory = { idle: 0, held: 0, released: 0, processes: 1 };
  let result: DriverResult | null = null;
  try {
    for await (const line of lines(child.stdout)) {
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line);
      } catch {
        continue; // Not ours (a library's stray output).
      }
      if (message.type === "mark") {
        switch (message.name) {
          case "start":
            serverStart = snapshotServer(server);
            driverStart = snapshotCpu(child.pid);
            machineStart = snapshotMachine();
            break;
          case "end":
            record.serverCpu = cpuShare(serverStart!, snapshotServer(server));
            record.driverCpu = cpuShare(driverStart!, snapshotCpu(child.pid));
            record.restCpu = machineShare(machineStart!, snapshotMachine()) -
              record.serverCpu - record.driverCpu;
            break;
          case "idle":
            memory.idle = memoryOf(server);
            break;
          case "held":
            memory.held = memoryOf(server);
            if (server.tree) {
              memory.processes = 1 + childrenOf(server.pid).length;
            }
            break;
          case "released":
            memory.released = memoryOf(server);
            break;
        }
        await stdin.write(encoder.encode("\n"));
      } else if (message.type === "result") {
        result = message.result as DriverResult;
      } else if (message.type === "error") {
        record.error ??= String(message.message);
      }
    }
    const status = await child.status;
    if (result === null && record.error === null) {
      record.error = `Driver exited with code ${status.code}: ${
        (await stderr).slice(-1500)
      }`;
    }
  } finally {
    clearTimeout(timer);
    await stdin.close().catch(() => {});
    await stderr.catch(() => "");
  }
  record.result = result;
  if (spec.workload === "w3" && result !== null) {
    record.memory = { unit: server.tree ? "PSS" : "RSS", ...memory };
  }
  return record;
}
