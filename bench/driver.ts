/**
 * The benchmark driver: one process that plays every lock user of one run
 * against one server. bench/main.ts starts it with a JSON {@linkcode DriverSpec}
 * as its only argument and talks to it over its standard streams:
 *
 * - the driver writes one JSON object per line to standard output:
 *   `{"type":"mark","name":"start"}` at each point where the orchestrator must
 *   sample the processes, and `{"type":"result",...}` once at the end;
 * - after each mark it waits for one line on standard input, the orchestrator's
 *   acknowledgement that it has sampled.
 *
 * Every client has its own TCP connection and one request in flight: it sends
 * a request and waits for the reply before sending the next, as lock users do.
 * The hot loops are top-level async functions over long-lived client objects
 * with pre-encoded requests, so the driver allocates no closure per request.
 *
 * @module
 */

import { delay, writeAllSync } from "../message/io.ts";
import { settle } from "./settle.ts";
import type { BenchClient } from "./peers/common.ts";
import { PklockLibClient, PklockRawClient } from "./peers/pklock.ts";
import {
  hashCollisions,
  PostgresLockClient,
  type PostgresTarget,
} from "./peers/postgres.ts";
import { RedisLockClient } from "./peers/redis.ts";
import { V3LockClient } from "./peers/v3lock.ts";
import { type DropResult, runDrop } from "./drop.ts";
import type { ProbeSetup, ProbeTimes } from "./probe_worker.ts";
import { jain, round, roundSummary, Samples, type Summary } from "./stats.ts";

/** The servers a driver can drive. */
export type TargetKind = "pklock" | "redis" | "postgres" | "v3lock";

/** What one driver process runs. */
export interface DriverSpec {
  /** The server's kind. */
  target: TargetKind;
  /** The server's port on 127.0.0.1. */
  port: number;
  /**
   * pklock only: the ports of a cluster's nodes; client `i` connects to
   * `ports[i % ports.length]` instead of `port`.
   */
  ports?: number[];
  /** v3lock only: etcd's client URLs; client `i` uses the `i % length`-th. */
  endpoints?: string[];
  /** PostgreSQL only: the user to connect as. */
  pgUser?: string;
  /** pklock only: the raw framed client or the client library. */
  client?: "raw" | "lib";
  /** PostgreSQL only: the raw wire-protocol client or npm:postgres. */
  pgClient?: "raw" | "npm";
  /** The workload (`drop`: bench/drop.ts). */
  workload: "w1" | "w2" | "w3" | "drop";
  /** W1/W2: how many clients. */
  clients?: number;
  /** W1/W2: seconds measured. */
  duration?: number;
  /** W1/W2: seconds run before measuring (JIT, caches, connection setup). */
  warmup?: number;
  /** W2: every how many grants a hold spans a round trip (0: never). */
  verifyEvery?: number;
  /** W3: how many connections hold a lock each. */
  hold?: number;
  /** W3: how many connect-and-lock attempts are under way at once. */
  connectConcurrency?: number;
  /** W3: how long probes wait after the mass disconnect, in ms. */
  probeTimeout?: number;
  /** Drop: how many locks the one connection holds. */
  locks?: number;
}

/** A W1 result: lock+release pairs. */
export interface W1Result {
  workload: "w1";
  clients: number;
  /** Pairs completed in the measured window. */
  pairs: number;
  /** The window, in seconds. */
  seconds: number;
  /** Pairs per second. */
  rate: number;
  /** Latency of a pair, in ms. */
  latency: Summary;
}

/** A W2 result: one contended lock. */
export interface W2Result {
  workload: "w2";
  clients: number;
  /** Grants in the measured window. */
  grants: number;
  /** The window, in seconds. */
  seconds: number;
  /** Grants per second. */
  rate: number;
  /** Time from request to grant, in ms. */
  wait: Summary;
  /** Time from a holder's release call to the next grant, in ms. */
  handOff: Summary;
  /** Grants per client in the window. */
  perClient: number[];
  /** Jain's index over `perClient`. */
  jain: number;
  /** Holds that spanned a round trip (see `verifyEvery`). */
  verifiedHolds: number;
  /** Grants seen while another client was inside a verified hold. */
  overlaps: number;
  /**
   * Fencing tokens seen out of order (pklock: its tokens; v3lock: the
   * revision of the answer to `Lock`; else null).
   */
  tokenRegressions: number | null;
  /** Refused `SET NX` attempts (Redis only; else null). */
  retries: number | null;
}

/** A W3 result: many held locks, then a mass disconnect. */
export interface W3Result {
  workload: "w3";
  /** Connections asked for. */
  hold: number;
  /** Locks granted. */
  granted: number;
  /** Connect-and-lock attempts that failed, with the first error. */
  failed: number;
  firstError: string | null;
  /** From the first connect to the last grant, in ms. */
  connectGrantMs: number;
  /** How long closing every connection took in the driver, in ms. */
  closeLoopMs: number;
  /** From the mass disconnect to the grant of the probe on the first name. */
  firstMs: number | null;
  /** The same for the last name. */
  lastMs: number | null;
  /** The same for a probe waiting on every other name (pklock only). */
  allMs: number | null;
  /** Names the all-names probe waited for. */
  allNames: number;
  /** How long probes were given, in ms. */
  probeTimeout: number;
}

/** What the driver prints last. */
export type DriverResult = W1Result | W2Result | W3Result | DropResult;

const encoder = new TextEncoder();

/**
 * Writes one line of JSON to the orchestrator.
 *
 * @param message The message.
 */
export function emit(message: unknown): void {
  writeAllSync(Deno.stdout, encoder.encode(JSON.stringify(message) + "\n"));
}

const stdinBuffer = new Uint8Array(256);

/**
 * Tells the orchestrator to sample now and waits for its acknowledgement.
 *
 * @param name The point reached.
 */
async function mark(name: string): Promise<void> {
  emit({ type: "mark", name });
  while (true) {
    const n = await Deno.stdin.read(stdinBuffer);
    if (n === null) throw new Error("The orchestrator went away");
    if (stdinBuffer.subarray(0, n).includes(10)) return;
  }
}

function pgTarget(spec: DriverSpec): PostgresTarget {
  return { port: spec.port, user: spec.pgUser ?? "postgres" };
}

/**
 * Opens one client and waits until it is connected.
 *
 * @param spec The run.
 * @param name The lock it takes.
 * @param index The client's number, for unique tokens.
 * @returns The client.
 */
async function open(
  spec: DriverSpec,
  name: string,
  index: number,
): Promise<BenchClient> {
  switch (spec.target) {
    case "pklock": {
      const port = spec.ports?.[index % spec.ports.length] ?? spec.port;
      return spec.client === "lib"
        ? await PklockLibClient.connect(port, name)
        : await PklockRawClient.connect(port, name);
    }
    case "v3lock": {
      const endpoints = spec.endpoints ?? [];
      return await V3LockClient.connect(
        endpoints[index % endpoints.length]!,
        name,
      );
    }
    case "redis":
      return await RedisLockClient.connect(
        spec.port,
        name,
        `${Deno.pid}-${index}`,
      );
    case "postgres": {
      if (spec.pgClient !== "npm") {
        return await PostgresLockClient.connect(pgTarget(spec), name);
      }
      // Loaded only when asked for: it is the slower client.
      const { PostgresNpmClient } = await import("./peers/postgres_npm.ts");
      return await PostgresNpmClient.connect(pgTarget(spec), name);
    }
  }
}

/** Shared state of the W1 and W2 loops. */
interface LoopState {
  stop: boolean;
  recording: boolean;
  error: unknown;
}

/**
 * Starts the loops, warms up, measures `duration` seconds between two marks,
 * stops the loops.
 */
async function measure(
  spec: DriverSpec,
  state: LoopState,
  loops: Promise<void>[],
): Promise<number> {
  await delay((spec.warmup ?? 1) * 1000);
  if (state.error !== null) throw state.error;
  await mark("start");
  state.recording = true;
  const start = performance.now();
  await delay((spec.duration ?? 5) * 1000);
  state.recording = false;
  const seconds = (performance.now() - start) / 1000;
  await mark("end");
  state.stop = true;
  await settle(loops);
  if (state.error !== null) throw state.error;
  return seconds;
}

interface W1State extends LoopState {
  samples: Samples;
}

async function w1Loop(client: BenchClient, state: W1State): Promise<void> {
  try {
    while (!state.stop) {
      const start = performance.now();
      await client.lock();
      await client.release();
      const end = performance.now();
      if (state.recording) state.samples.push(end - start);
    }
  } catch (error) {
    state.error ??= error;
    state.stop = true;
  }
}

async function runW1(spec: DriverSpec): Promise<W1Result> {
  const count = spec.clients ?? 1;
  const names = Array.from({ length: count }, (_, i) => `w1-${i}`);
  if (spec.target === "postgres") await checkHashes(spec, names);
  const clients = await Promise.all(
    names.map((name, i) => open(spec, name, i)),
  );
  const state: W1State = {
    stop: false,
    recording: false,
    error: null,
    samples: new Samples(),
  };
  try {
    const seconds = await measure(
      spec,
      state,
      clients.map((client) => w1Loop(client, state)),
    );
    const latency = state.samples.summary();
    return {
      workload: "w1",
      clients: count,
      pairs: latency.count,
      seconds: round(seconds),
      rate: round(latency.count / seconds, 1),
      latency: roundSummary(latency),
    };
  } finally {
    for (const client of clients) client.close();
  }
}

interface W2State extends LoopState {
  waits: Samples;
  handOffs: Samples;
  /** When the last holder called release, or 0 once its successor counted it. */
  releasedAt: number;
  perClient: number[];
  /** The client inside a verified hold, or -1. */
  holder: number;
  grants: number;
  verifyEvery: number;
  verifiedHolds: number;
  overlaps: number;
  lastToken: number;
  tokenRegressions: number;
}

/**
 * One contender. A hold normally ends at once (the release is sent in the
 * same tick as the grant is read), which no client-side check can see
 * overlap with; so every `verifyEvery`-th grant is held across a round trip
 * to the server, and a grant read by anyone during such a hold is an overlap.
 */
async function w2Loop(
  client: BenchClient,
  index: number,
  state: W2State,
): Promise<void> {
  try {
    while (!state.stop) {
      const start = performance.now();
      await client.lock();
      const granted = performance.now();
      if (state.holder !== -1) state.overlaps++;
      if (state.releasedAt !== 0) {
        if (state.recording) state.handOffs.push(granted - state.releasedAt);
        state.releasedAt = 0;
      }
      const token = client.token;
      if (token !== undefined) {
        if (token <= state.lastToken) state.tokenRegressions++;
        state.lastToken = token;
      }
      if (state.recording) {
        state.waits.push(granted - start);
        state.perClient[index]!++;
      }
      if (state.verifyEvery > 0 && ++state.grants % state.verifyEvery === 0) {
        state.holder = index;
        await client.touch();
        state.holder = -1;
        if (state.recording) state.verifiedHolds++;
      }
      state.releasedAt = performance.now();
      await client.release();
    }
  } catch (error) {
    state.error ??= error;
    state.stop = true;
  }
}

async function runW2(spec: DriverSpec): Promise<W2Result> {
  const count = spec.clients ?? 1;
  const clients = await Promise.all(
    Array.from({ length: count }, (_, i) => open(spec, "w2", i)),
  );
  const state: W2State = {
    stop: false,
    recording: false,
    error: null,
    waits: new Samples(),
    handOffs: new Samples(),
    releasedAt: 0,
    perClient: new Array(count).fill(0),
    holder: -1,
    grants: 0,
    verifyEvery: spec.verifyEvery ?? 16,
    verifiedHolds: 0,
    overlaps: 0,
    lastToken: 0,
    tokenRegressions: 0,
  };
  try {
    const seconds = await measure(
      spec,
      state,
      clients.map((client, i) => w2Loop(client, i, state)),
    );
    const wait = state.waits.summary();
    let retries: number | null = null;
    if (spec.target === "redis") {
      retries = 0;
      for (const client of clients) {
        retries += (client as RedisLockClient).refusals;
      }
    }
    return {
      workload: "w2",
      clients: count,
      grants: wait.count,
      seconds: round(seconds),
      rate: round(wait.count / seconds, 1),
      wait: roundSummary(wait),
      handOff: roundSummary(state.handOffs.summary()),
      perClient: state.perClient,
      jain: round(jain(state.perClient), 4),
      verifiedHolds: state.verifiedHolds,
      overlaps: state.overlaps,
      tokenRegressions: spec.target === "pklock" || spec.target === "v3lock"
        ? state.tokenRegressions
        : null,
      retries,
    };
  } finally {
    for (const client of clients) client.close();
  }
}

/** W3's connect-and-lock pool. */
interface W3State {
  spec: DriverSpec;
  next: number;
  clients: (BenchClient | undefined)[];
  granted: number;
  failed: number;
  firstError: string | null;
}

async function w3Worker(state: W3State): Promise<void> {
  const { spec } = state;
  const count = state.clients.length;
  while (state.next < count) {
    const i = state.next++;
    try {
      const client = await open(spec, `w3-${i}`, i);
      state.clients[i] = client;
      await client.lock();
      state.granted++;
    } catch (error) {
      state.failed++;
      state.firstError ??= String(error);
    }
  }
}

/** The wall clock with sub-millisecond precision, as the probe worker reads it. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Receives the probe worker's messages one at a time. */
class WorkerInbox {
  readonly #messages: Record<string, unknown>[] = [];
  #waiting: ((message: Record<string, unknown>) => void) | null = null;

  constructor(worker: Worker) {
    worker.onmessage = (event) => {
      const waiting = this.#waiting;
      this.#waiting = null;
      if (waiting) waiting(event.data);
      else this.#messages.push(event.data);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      const message = { type: "error", message: String(event.message) };
      const waiting = this.#waiting;
      this.#waiting = null;
      if (waiting) waiting(message);
      else this.#messages.push(message);
    };
  }

  async next(expected: string): Promise<Record<string, unknown>> {
    const message = this.#messages.shift() ??
      await new Promise<Record<string, unknown>>((resolve) => {
        this.#waiting = resolve;
      });
    if (message.type !== expected) {
      throw new Error(
        `Probe worker: ${String(message.message ?? message.type)}`,
      );
    }
    return message;
  }
}

async function runW3(spec: DriverSpec): Promise<W3Result> {
  const target = spec.target;
  if (target === "v3lock") throw new Error("W3 is not run against v3lock");
  const count = spec.hold ?? 1000;
  const probeTimeout = spec.probeTimeout ?? 30_000;
  const names = Array.from({ length: count }, (_, i) => `w3-${i}`);
  if (spec.target === "postgres") await checkHashes(spec, names);
  // The holders use the raw clients: W3 measures the servers.
  const holderSpec: DriverSpec = { ...spec, client: "raw", pgClient: "raw" };
  const state: W3State = {
    spec: holderSpec,
    next: 0,
    clients: new Array(count),
    granted: 0,
    failed: 0,
    firstError: null,
  };
  const worker = new Worker(new URL("./probe_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    await mark("idle");
    const start = performance.now();
    const workers = Array.from(
      { length: Math.min(count, spec.connectConcurrency ?? 200) },
      () => w3Worker(state),
    );
    await Promise.all(workers);
    const connectGrantMs = performance.now() - start;
    await mark("held");

    const middle = spec.target === "pklock" ? names.slice(1, -1) : [];
    const inbox = new WorkerInbox(worker);
    const setup: ProbeSetup = {
      type: "setup",
      target,
      port: spec.port,
      pgUser: spec.pgUser ?? "postgres",
      first: names[0]!,
      last: names[count - 1]!,
      middle,
      timeout: probeTimeout,
    };
    worker.postMessage(setup);
    await inbox.next("ready");

    const dropAt = now();
    worker.postMessage({ type: "drop", at: dropAt });
    for (const client of state.clients) client?.close();
    const closeLoopMs = now() - dropAt;
    const times = await inbox.next("done") as unknown as ProbeTimes;
    const since = (at: number | null) =>
      at === null ? null : round(at - dropAt);
    await mark("released");
    return {
      workload: "w3",
      hold: count,
      granted: state.granted,
      failed: state.failed,
      firstError: state.firstError,
      connectGrantMs: round(connectGrantMs),
      closeLoopMs: round(closeLoopMs),
      firstMs: since(times.first),
      lastMs: since(times.last),
      allMs: since(times.all),
      allNames: middle.length,
      probeTimeout,
    };
  } finally {
    worker.terminate();
    for (const client of state.clients) client?.close();
  }
}

async function checkHashes(
  spec: DriverSpec,
  names: readonly string[],
): Promise<void> {
  const collisions = await hashCollisions(pgTarget(spec), names);
  if (collisions > 0) {
    throw new Error(
      `hashtext() maps ${collisions} of the ${names.length} lock names onto ` +
        "another's key: they would share one advisory lock",
    );
  }
}

/**
 * Runs the workload the spec names.
 *
 * @param spec The run.
 * @returns Its result.
 */
export function run(spec: DriverSpec): Promise<DriverResult> {
  switch (spec.workload) {
    case "w1":
      return runW1(spec);
    case "w2":
      return runW2(spec);
    case "w3":
      return runW3(spec);
    case "drop":
      return runDrop(spec);
  }
}

if (import.meta.main) {
  const spec = JSON.parse(Deno.args[0] ?? "{}") as DriverSpec;
  try {
    const result = await run(spec);
    emit({ type: "result", result });
    Deno.exit(0);
  } catch (error) {
    emit({ type: "error", message: String((error as Error)?.stack ?? error) });
    Deno.exit(1);
  }
}
