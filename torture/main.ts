/**
 * `deno task torture`: safety under churn. Starts `pklock serve` and a pool of
 * worker processes (torture/worker.ts) that fight over one exclusive lock and
 * log every hold to a shared file; kills random holders and waiters with
 * `kill -9`, replaces them, restarts the server with `kill -9` on the same
 * state file; then stops everything and checks the log (torture/check.ts).
 *
 * Prints one line, `torture: grants=N kills=K ... violations=V`, and exits 1
 * when the check found a violation, a worker failed, or a worker did not
 * finish when asked to stop.
 *
 * ```sh
 * deno task torture [--workers 8] [--rounds 2000] [--seconds 30] \
 *   [--server-restarts 2] [--kill-every 150] [--seed N] [--log FILE]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CheckResult, LogChecker, type Violation } from "./check.ts";
import { delay } from "../message/io.ts";
import { Child } from "./child.ts";
import { LogTail, LogWriter } from "./log_file.ts";
import { Random } from "./random.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const WORKER = new URL("./worker.ts", import.meta.url).pathname;

/** How long workers get to finish their round once asked to stop. */
const DRAIN_MS = 10_000;
/** How long a server gets to start or to stop. */
const SERVER_MS = 15_000;
/** How long a due server restart may wait for a worker to hold the lock. */
const RESTART_PATIENCE_MS = 1000;
/** The run stops at this many times `seconds`, whatever else. */
const HARD_STOP = 2.5;
/** How often the driver looks at the log and decides what to do next. */
const TICK_MS = 10;

/** Options of {@linkcode torture}. */
export interface TortureOptions {
  /**
   * Worker processes kept running.
   *
   * @default {8}
   */
  workers: number;
  /**
   * Stop after this many grants; 0 for no such bound.
   *
   * @default {2000}
   */
  rounds: number;
  /**
   * Stop after this many seconds, whatever the grants.
   *
   * @default {30}
   */
  seconds: number;
  /**
   * Times the server is killed with SIGKILL and started again, spread over
   * the run.
   *
   * @default {2}
   */
  serverRestarts: number;
  /**
   * The mean time between two worker kills, in milliseconds.
   *
   * @default {150}
   */
  killEvery: number;
  /** Seeds every random choice of the driver and of the workers. */
  seed: number;
  /** Keep the log in this file (it is removed otherwise). */
  log?: string;
  /** Ends the run early; the processes are killed and nothing is checked. */
  signal?: AbortSignal;
}

/** What a run did and found. */
export interface TortureResult extends CheckResult {
  serverRestarts: number;
  spawned: number;
  /** Workers and servers that exited in a way they never should. */
  errors: string[];
  seconds: number;
  /** The log's lines around each violation (the log may be gone). */
  excerpts: string[];
  interrupted: boolean;
}

interface WorkerChild {
  child: Child;
  gen: number;
  /** Exit record written and counts taken. */
  reaped: Promise<void>;
  killed: boolean;
  terminated: boolean;
}

interface ServerChild {
  child: Child;
  gen: number;
  port: number;
}

/**
 * Runs the torture test.
 *
 * @param options Workers, bounds, chaos and seed.
 * @returns The counts, violations and errors.
 */
export async function torture(options: TortureOptions): Promise<TortureResult> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-torture-" });
  try {
    return await run(options, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function run(
  options: TortureOptions,
  dir: string,
): Promise<TortureResult> {
  const random = new Random(options.seed);
  const logPath = options.log ?? `${dir}/torture.log`;
  const statePath = `${dir}/state.json`;
  await Deno.writeTextFile(logPath, "");
  const log = new LogWriter(logPath);
  const tail = new LogTail(logPath);
  const checker = new LogChecker();
  const workers = new Map<number, WorkerChild>();
  const servers = new Set<ServerChild>();
  const deadGens = new Set<number>();
  const errors: string[] = [];
  const began = performance.now();
  let server: ServerChild | undefined;
  let gen = 0;
  let serverRestarts = 0;
  let spawned = 0;

  const pump = async () => {
    for (const line of await tail.read()) checker.pushLine(line);
  };

  const startServer = async (): Promise<ServerChild> => {
    gen++;
    const child = new Child([
      "--allow-all",
      MAIN,
      "serve",
      "--port",
      "0",
      "--state-file",
      statePath,
      "--log-level",
      "warning",
    ]);
    const started: ServerChild = { child, gen, port: 0 };
    servers.add(started);
    const match = await child.waitForStdout(
      /listening on .*:(\d+)\n/,
      SERVER_MS,
    );
    if (match === null) {
      throw new Error(`Server ${gen} did not start:\n${child.stderr}`);
    }
    started.port = Number(match[1]);
    log.write({
      event: "server_start",
      gen,
      port: started.port,
      pid: child.pid,
    });
    return started;
  };

  const spawnWorker = (current: ServerChild) => {
    const child = new Child([
      "--allow-net=127.0.0.1",
      `--allow-read=${logPath}`,
      `--allow-write=${logPath}`,
      WORKER,
      "--port",
      String(current.port),
      "--log",
      logPath,
      "--gen",
      String(current.gen),
      "--seed",
      String(random.int(0, 2 ** 31)),
    ], { gated: true });
    const pid = child.pid;
    // The worker writes nothing before its gate opens, so its `spawn` line
    // precedes its own, however late this process runs after the spawn.
    log.write({ event: "spawn", pid, gen: current.gen });
    child.open();
    spawned++;
    const worker: WorkerChild = {
      child,
      gen: current.gen,
      killed: false,
      terminated: false,
      reaped: child.done.then((status) => {
        log.write({ event: "exit", pid, code: status.code });
        workers.delete(pid);
        const expected = worker.killed ||
          (status.code === 0 && worker.terminated) ||
          (status.code === 4 && deadGens.has(worker.gen)) ||
          (status.signal === "SIGTERM" && worker.terminated);
        if (!expected) {
          errors.push(
            `worker pid ${pid} (server ${worker.gen}) exited with code ${status.code}` +
              `${status.signal ? ` (${status.signal})` : ""}:\n${child.stderr}`,
          );
        }
      }),
    };
    workers.set(pid, worker);
  };

  /** Stops, logs, kills: the kill line is after the victim's last line. */
  const killWorker = async (
    worker: WorkerChild,
    reason: "chaos" | "straggler",
  ) => {
    const stopped = await worker.child.stop();
    if (stopped === null || worker.child.exited) return;
    worker.killed = true;
    log.write({ event: "kill", pid: worker.child.pid, reason, stopped });
    worker.child.kill("SIGKILL");
    await worker.reaped;
  };

  const killServer = async (victim: ServerChild) => {
    const stopped = await victim.child.stop();
    deadGens.add(victim.gen);
    log.write({ event: "server_kill", gen: victim.gen, stopped: !!stopped });
    victim.child.kill("SIGKILL");
    await victim.child.done;
    servers.delete(victim);
  };

  const live = () => [...workers.values()].filter((w) => !w.killed);

  let interrupted = false;
  try {
    let startingMs = 0;
    let grantsBefore = 0;
    const serve = async () => {
      const starting = performance.now();
      server = await startServer();
      startingMs += performance.now() - starting;
      grantsBefore = checker.stats.grants;
      return server;
    };
    server = await serve();
    const restartAt = Array.from(
      { length: options.serverRestarts },
      (_, i) => (i + 1) / (options.serverRestarts + 1),
    );
    const killGap = () =>
      random.int(Math.ceil(options.killEvery / 2), options.killEvery * 3 / 2);
    let nextKill = performance.now() + killGap();
    let restartDue: number | undefined;
    while (true) {
      await delay(TICK_MS, options.signal);
      if (options.signal?.aborted) {
        interrupted = true;
        break;
      }
      await pump();
      if (server.child.exited) {
        throw new Error(
          `Server ${server.gen} exited by itself:\n${server.child.stderr}`,
        );
      }
      // Time spent starting servers is not time under test; and each server
      // must grant at least once before it is killed or the run ends, unless
      // the machine is so slow that the hard stop comes first.
      const elapsed = performance.now() - began;
      const progress = Math.max(
        options.rounds > 0 ? checker.stats.grants / options.rounds : 0,
        (elapsed - startingMs) / (options.seconds * 1000),
      );
      const granted = checker.stats.grants > grantsBefore;
      if (elapsed > options.seconds * 1000 * HARD_STOP) break;
      if (progress >= 1 && granted) break;
      if (
        serverRestarts < restartAt.length &&
        progress >= restartAt[serverRestarts]! && granted
      ) {
        // Best in the middle of a long hold, so that a hold dies with the
        // server; but not at any price.
        restartDue ??= performance.now();
        if (
          checker.hold?.long === true ||
          performance.now() - restartDue >= RESTART_PATIENCE_MS
        ) {
          restartDue = undefined;
          await killServer(server);
          serverRestarts++;
          server = await serve();
          continue;
        }
      }
      const current = server;
      const running = live().filter((w) => w.gen === current.gen).length;
      for (let i = running; i < options.workers; i++) spawnWorker(current);
      if (performance.now() >= nextKill) {
        const candidates = live();
        const holder = workers.get(checker.hold?.pid ?? -1);
        const victim = holder !== undefined && !holder.killed &&
            random.next() < 0.5
          ? holder
          : candidates.length > 0
          ? random.pick(candidates)
          : undefined;
        if (victim !== undefined) await killWorker(victim, "chaos");
        nextKill = performance.now() + killGap();
      }
    }

    if (!interrupted) {
      log.write({ event: "shutdown" });
      for (const worker of workers.values()) {
        worker.terminated = true;
        worker.child.kill("SIGTERM");
      }
      const drained = new AbortController();
      await Promise.race([
        Promise.all([...workers.values()].map((w) => w.reaped)),
        delay(DRAIN_MS, drained.signal),
      ]);
      drained.abort();
      for (const worker of [...workers.values()]) {
        if (!worker.child.exited) await killWorker(worker, "straggler");
      }
      await Promise.all([...workers.values()].map((w) => w.reaped));
      server.child.kill("SIGTERM");
      const stopped = new AbortController();
      await Promise.race([
        server.child.done,
        delay(SERVER_MS, stopped.signal),
      ]);
      stopped.abort();
      const status = server.child.exited ? await server.child.done : null;
      if (status?.code !== 0) {
        errors.push(
          `server ${server.gen} did not exit 0 on SIGTERM (${
            status ? `code ${status.code}` : "still running"
          }):\n${server.child.stderr}`,
        );
      }
    }
  } finally {
    // Whatever happened, no process outlives the run.
    for (const worker of workers.values()) {
      worker.killed = true;
      worker.child.kill("SIGKILL");
    }
    for (const each of servers) each.child.kill("SIGKILL");
    await Promise.all([...workers.values()].map((w) => w.reaped));
    await Promise.all([...servers].map((s) => s.child.done));
    await pump();
    log.close();
    tail.close();
  }

  const result = checker.finish();
  return {
    ...result,
    serverRestarts,
    spawned,
    errors,
    seconds: (performance.now() - began) / 1000,
    excerpts: await excerptsOf(logPath, result.violations),
    interrupted,
  };
}

/** The lines around the first violations, for the report. */
async function excerptsOf(
  path: string,
  violations: readonly Violation[],
): Promise<string[]> {
  if (violations.length === 0) return [];
  const lines = (await Deno.readTextFile(path)).split("\n");
  return violations.slice(0, 10).map((violation) => {
    const from = Math.max(1, violation.line - 12);
    const to = Math.min(lines.length, violation.line + 3);
    const shown: string[] = [];
    for (let n = from; n <= to; n++) {
      shown.push(
        `${n === violation.line ? ">" : " "}${String(n).padStart(7)} ${
          lines[n - 1]
        }`,
      );
    }
    return `${violation.kind} at line ${violation.line}: ${violation.message}\n${
      shown.join("\n")
    }`;
  });
}

/**
 * The summary line.
 *
 * @param result A run's result.
 * @param seed The run's seed.
 * @returns `torture: grants=N kills=K ... violations=V`.
 */
export function summaryLine(result: TortureResult, seed: number): string {
  const { stats } = result;
  const fields: Array<[string, number | string]> = [
    ["grants", stats.grants],
    ["kills", stats.kills],
    ["holder_kills", stats.holderKills],
    ["waiter_kills", stats.waiterKills],
    ["server_restarts", result.serverRestarts],
    ["refusals", stats.refusals],
    ["lost", stats.lost],
    ["disconnected", stats.disconnected],
    ["max_token", stats.maxToken],
    ["workers_started", result.spawned],
    ["stragglers", stats.stragglers],
    ["errors", result.errors.length],
    ["violations", result.violations.length],
    ["seconds", result.seconds.toFixed(1)],
    ["seed", seed],
  ];
  return `torture: ${fields.map(([k, v]) => `${k}=${v}`).join(" ")}`;
}

const USAGE = `Usage: deno task torture [options]

  --workers N          worker processes kept running (default 8)
  --rounds N           stop after N grants; 0: no bound (default 2000)
  --seconds S          stop after S seconds (default 30)
  --server-restarts N  kill -9 and restart the server N times (default 2)
  --kill-every MS      mean time between worker kills (default 150)
  --seed N             seed of every random choice (default: random)
  --log FILE           keep the log in FILE
`;

/**
 * Parses the flags, runs, prints the summary.
 *
 * @param args The command-line arguments.
 * @returns The exit code: 0 clean, 1 violations or errors, 2 bad usage, 130
 *   interrupted.
 */
export async function main(args: string[]): Promise<number> {
  let options: TortureOptions;
  try {
    options = parseOptions(args);
  } catch (error) {
    console.error(`torture: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, onSignal);
  }
  let result: TortureResult;
  try {
    result = await torture({ ...options, signal: abort.signal });
  } catch (error) {
    // The harness itself failed (a server that would not start, say).
    console.error(`torture: ${(error as Error).stack ?? error}`);
    return 1;
  } finally {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.removeSignalListener(signal, onSignal);
    }
  }
  if (result.interrupted) {
    console.log(`${summaryLine(result, options.seed)} interrupted=1`);
    return 130;
  }
  for (const error of result.errors) console.error(`error: ${error}`);
  for (const excerpt of result.excerpts) console.error(`\n${excerpt}`);
  if (result.violations.length > result.excerpts.length) {
    for (const violation of result.violations.slice(result.excerpts.length)) {
      console.error(
        `${violation.kind} at line ${violation.line}: ${violation.message}`,
      );
    }
  }
  console.log(summaryLine(result, options.seed));
  const failed = result.violations.length > 0 || result.errors.length > 0 ||
    result.stats.stragglers > 0;
  return failed ? 1 : 0;
}

function parseOptions(args: string[]): TortureOptions {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      workers: { type: "string", default: "8" },
      rounds: { type: "string", default: "2000" },
      seconds: { type: "string", default: "30" },
      "server-restarts": { type: "string", default: "2" },
      "kill-every": { type: "string", default: "150" },
      seed: { type: "string" },
      log: { type: "string" },
    },
  });
  const count = (name: keyof typeof values, min: number): number => {
    const text = values[name]!;
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) {
      throw new Error(
        `--${name} needs an integer of at least ${min}: "${text}"`,
      );
    }
    return value;
  };
  const seconds = Number(values.seconds);
  if (!(seconds > 0)) {
    throw new Error(`--seconds needs a positive number: "${values.seconds}"`);
  }
  const options: TortureOptions = {
    workers: count("workers", 1),
    rounds: count("rounds", 0),
    seconds,
    serverRestarts: count("server-restarts", 0),
    killEvery: count("kill-every", 2),
    seed: values.seed === undefined
      ? Math.floor(Math.random() * 2 ** 31)
      : count("seed", 0),
  };
  if (values.log !== undefined) options.log = values.log;
  return options;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
