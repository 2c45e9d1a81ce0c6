/**
 * W3's probes, in a worker thread of the driver: clients that wait for the
 * first and the last held name (and, on pklock, one connection that waits for
 * every other name) while the driver's main thread drops every holder at once.
 * On their own thread, the probes read their grants while the main thread is
 * still busy closing sockets, so the times measure the server, not the
 * driver's close loop.
 *
 * Messages in: {@linkcode ProbeSetup}, then `{type: "drop", at}`. Out:
 * `{type: "ready"}` once every probe waits on the server, then
 * {@linkcode ProbeTimes}.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { delay } from "../message/io.ts";
import type { BenchClient } from "./peers/common.ts";
import { PklockRawClient } from "./peers/pklock.ts";
import { PostgresLockClient } from "./peers/postgres.ts";
import { RedisLockClient, RETRY_MS } from "./peers/redis.ts";

/** What the probes wait for. */
export interface ProbeSetup {
  type: "setup";
  target: "pklock" | "redis" | "postgres";
  port: number;
  pgUser: string;
  /** The first and the last held name. */
  first: string;
  last: string;
  /** pklock only: every other held name, for one connection to wait on. */
  middle: string[];
  /** How long the probes wait after the drop, in ms. */
  timeout: number;
}

/** When each probe was granted, in ms since the epoch (`null`: never). */
export interface ProbeTimes {
  type: "done";
  first: number | null;
  last: number | null;
  all: number | null;
}

/** The wall clock with sub-millisecond precision, comparable across threads. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** The drop's time, once the main thread says it has begun. */
const dropped = Promise.withResolvers<number>();
let deadline = Infinity;

async function timed(grant: Promise<unknown>): Promise<number | null> {
  try {
    await grant;
    return now();
  } catch {
    return null;
  }
}

async function redisProbe(client: RedisLockClient): Promise<void> {
  while (!await client.tryLock()) {
    if (now() >= deadline) throw new Error("Not granted before the deadline");
    await delay(RETRY_MS);
  }
}

async function within(
  time: Promise<number | null>,
  until: number,
): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), Math.max(0, until - now()));
  });
  try {
    return await Promise.race([time, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function run(setup: ProbeSetup): Promise<ProbeTimes> {
  const probes: BenchClient[] = [];
  try {
    let first: Promise<unknown>;
    let last: Promise<unknown>;
    let all: Promise<unknown> | null = null;
    if (setup.target === "pklock") {
      const a = await PklockRawClient.connect(setup.port, setup.first);
      const b = await PklockRawClient.connect(setup.port, setup.last);
      probes.push(a, b);
      // Each call returns once a ping behind the request was answered, so
      // the request is queued on the server.
      await a.requestLock();
      await b.requestLock();
      first = a.grants(1);
      last = b.grants(1);
      if (setup.middle.length > 0) {
        const sweep = await PklockRawClient.connect(setup.port, "sweep");
        probes.push(sweep);
        await sweep.queueMany(setup.middle);
        all = sweep.grants(setup.middle.length);
      }
    } else if (setup.target === "redis") {
      const a = await RedisLockClient.connect(
        setup.port,
        setup.first,
        "probe-a",
      );
      const b = await RedisLockClient.connect(
        setup.port,
        setup.last,
        "probe-b",
      );
      probes.push(a, b);
      first = redisProbe(a);
      last = redisProbe(b);
    } else {
      const target = { port: setup.port, user: setup.pgUser };
      const a = await PostgresLockClient.connect(target, setup.first);
      const b = await PostgresLockClient.connect(target, setup.last);
      probes.push(a, b);
      first = a.lock();
      last = b.lock();
      // pg_advisory_lock blocks without a reply: give both time to queue.
      await delay(500);
    }
    const times = [timed(first), timed(last), all === null ? null : timed(all)];
    self.postMessage({ type: "ready" });
    const at = await dropped.promise;
    deadline = at + setup.timeout;
    const [a, b, c] = await Promise.all(
      times.map((t) => t === null ? null : within(t, deadline)),
    );
    return { type: "done", first: a ?? null, last: b ?? null, all: c ?? null };
  } finally {
    for (const probe of probes) probe.close();
  }
}

self.onmessage = (event: MessageEvent) => {
  const message = event.data as ProbeSetup | { type: "drop"; at: number };
  if (message.type === "drop") {
    dropped.resolve(message.at);
    return;
  }
  run(message).then(
    (times) => self.postMessage(times),
    (error) => self.postMessage({ type: "error", message: String(error) }),
  );
};
