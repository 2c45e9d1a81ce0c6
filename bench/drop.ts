/**
 * The driver's disconnect scenario of the cluster bench: one connection
 * holds `locks` locks on one node, a second connection, on another node,
 * queues one request behind each, and the holder's connection is closed; the
 * figure is the time from the close to the waiter's last grant.
 *
 * For v3lock the holder is one lease (v3lock's session) holding every lock,
 * the waiter another lease queued on each, and the drop is the revocation of
 * the holder's lease: what etcd does when a dead client's lease ends, without
 * the wait for its TTL. Here etcd 3.4.23 re-granted only some hundreds of a
 * thousand waiters and its lock service then stayed wedged (it looks like the
 * in-process watch client's deadlock under a storm of watch cancellations,
 * etcd issues 18879 and 20716): bench/cluster.ts runs v3lock's drop once,
 * last.
 *
 * A grant the waiter gets before the drop is an overlap; a waiter's token not
 * above the holder's token of the same name is a token regression.
 *
 * @module
 */

import type { DriverSpec } from "./driver.ts";
import { ClosedError } from "./peers/common.ts";
import { PklockRawClient } from "./peers/pklock.ts";
import { gateway, V3LockClient } from "./peers/v3lock.ts";
import { round } from "./stats.ts";
import { delay } from "../message/io.ts";

/** A drop result: one connection's locks re-granted elsewhere. */
export interface DropResult {
  workload: "drop";
  /** Locks the holder held. */
  locks: number;
  /** From the holder's first request to its last grant, in ms. */
  holdMs: number;
  /** From the waiter's first request until every one was queued, in ms. */
  queueMs: number;
  /** From the drop to the waiter's first grant, in ms. */
  firstMs: number | null;
  /** From the drop to the waiter's last grant, in ms. */
  lastMs: number | null;
  /** The waiter's grants after the drop. */
  granted: number;
  /** The waiter's grants before the drop: holds that overlapped. */
  overlaps: number;
  /** Waiter grants whose token was not above the holder's on that name. */
  tokenRegressions: number;
}

/**
 * How long taking or queueing every lock may take before the run fails: on
 * the loaded 2-core machine of docs/benchmarks.md, taking them took up to 12 s.
 */
const PHASE_MS = 60_000;

/** How long the waiter's grants are awaited after the drop. */
const REGRANT_MS = 10_000;

/**
 * How many requests are sent before their answers are awaited while the
 * locks are taken and queued (not measured): a thousand txns at once keep a
 * loaded 2-core etcd past its clients' timeouts.
 */
const BATCH = 50;

/** What the two sides did, as the result counts it. */
interface Tally {
  holderTokens: number[];
  dropAt: number;
  first: number | null;
  last: number | null;
  granted: number;
  overlaps: number;
  tokenRegressions: number;
}

/** Counts the waiter's grant of lock `index` with `token`, read at `at`. */
function count(tally: Tally, index: number, token: number, at: number): void {
  if (tally.dropAt === 0) {
    tally.overlaps++;
    return;
  }
  tally.first ??= at - tally.dropAt;
  tally.last = at - tally.dropAt;
  tally.granted++;
  if (!(token > tally.holderTokens[index]!)) tally.tokenRegressions++;
}

/**
 * Closes clients when `ms` pass, so that their pending reads fail: a bound on
 * a wait. `fired` tells a close of ours from the server's.
 */
class Bound {
  fired = false;
  readonly #timer: ReturnType<typeof setTimeout>;

  constructor(clients: { close(): void }[], ms: number) {
    this.#timer = setTimeout(() => {
      this.fired = true;
      for (const client of clients) client.close();
    }, ms);
  }

  clear(): void {
    clearTimeout(this.#timer);
  }
}

/** Whether `promise` settled within `ms`; it rejects if `promise` does. */
async function settled(promise: Promise<unknown>, ms: number) {
  const bound = new AbortController();
  try {
    return await Promise.race([
      promise.then(() => true),
      delay(ms, bound.signal).then(() => false),
    ]);
  } finally {
    bound.abort();
  }
}

/** The grant in a pklock message, or `null` for an event. */
function grantOf(
  message: Record<string, unknown>,
): { index: number; token: number } | null {
  if (message.event === "lock_lost") {
    throw new Error(`The waiter lost a lock: ${JSON.stringify(message)}`);
  }
  if ("event" in message) return null;
  const result = message.result as { status?: string; token?: number };
  if (result?.status !== "ok") {
    throw new Error(`Unexpected reply: ${JSON.stringify(message)}`);
  }
  return { index: Number(message.id) - 1, token: Number(result.token) };
}

async function dropPklock(spec: DriverSpec, names: string[], tally: Tally) {
  const ports = spec.ports ?? [spec.port];
  const holder = await PklockRawClient.connect(ports[0]!, "");
  const waiter = await PklockRawClient.connect(ports[1 % ports.length]!, "");
  let phase = "taking the holder's locks";
  let bound = new Bound([holder, waiter], PHASE_MS);
  let holdMs = 0;
  let queueMs = 0;
  try {
    const start = performance.now();
    for (let i = 0; i < names.length; i += BATCH) {
      const batch = names.slice(i, i + BATCH);
      await holder.requestMany(batch, 1 + i);
      for (let held = 0; held < batch.length; held++) {
        const grant = grantOf(await holder.message())!;
        tally.holderTokens[grant.index] = grant.token;
      }
    }
    holdMs = performance.now() - start;
    bound.clear();
    phase = "queueing the waiter's requests";
    bound = new Bound([holder, waiter], PHASE_MS);
    const queued = new Set<unknown>();
    for (let i = 0; i < names.length; i += BATCH) {
      const batch = names.slice(i, i + BATCH);
      await waiter.requestMany(batch, 1 + i, true);
      // A `position` event is sent once etcd has the request's key.
      while (queued.size < i + batch.length) {
        const message = await waiter.message();
        const grant = grantOf(message);
        if (grant) {
          count(tally, grant.index, grant.token, performance.now());
          queued.add(names[grant.index]);
        } else if (message.event === "position") queued.add(message.lockName);
      }
    }
    queueMs = performance.now() - start - holdMs;
    bound.clear();
    phase = "re-granting";
    bound = new Bound([waiter], REGRANT_MS);
    tally.dropAt = performance.now();
    holder.close();
    while (tally.granted + tally.overlaps < names.length) {
      const grant = grantOf(await waiter.message());
      if (grant) count(tally, grant.index, grant.token, performance.now());
    }
    return { holdMs, queueMs };
  } catch (error) {
    if (bound.fired) {
      // Out of time re-granting: the result says how many were.
      if (phase === "re-granting") return { holdMs, queueMs };
      throw new Error(`Timed out after ${PHASE_MS} ms ${phase}`);
    }
    if (phase === "re-granting" && error instanceof ClosedError) {
      throw new Error(
        `The waiter's node closed it after ${tally.granted} of ` +
          `${names.length} re-grants (lost its etcd lease? see its log)`,
      );
    }
    throw error;
  } finally {
    bound.clear();
    holder.close();
    waiter.close();
  }
}

/** v3lock's keys under this driver's names, counted. */
async function keyCount(endpoint: string): Promise<number> {
  const prefix = new TextEncoder().encode(`${Deno.pid}/drop-`);
  const end = prefix.slice();
  end[end.length - 1]!++;
  const answer = await gateway(endpoint, "/v3/kv/range", {
    key: btoa(String.fromCharCode(...prefix)),
    range_end: btoa(String.fromCharCode(...end)),
    count_only: true,
  });
  return Number(answer.count ?? 0);
}

async function dropV3lock(spec: DriverSpec, names: string[], tally: Tally) {
  const endpoints = spec.endpoints ?? [];
  const at = (i: number) => endpoints[i % endpoints.length]!;
  // One session each: every lock of a side is on that side's one lease.
  const first = await V3LockClient.connect(at(0), names[0]!);
  const holders = await Promise.all(
    names.map((name) => V3LockClient.connect(at(0), name, first.lease)),
  );
  // The waiters on the other members, spread: one gateway with more than
  // about a hundred Lock calls pending stalled some of them for good here.
  const away = (i: number) => at(1 + i % Math.max(1, endpoints.length - 1));
  const other = await V3LockClient.connect(away(0), names[0]!);
  const waiters = await Promise.all(
    names.map((name, i) => V3LockClient.connect(away(i), name, other.lease)),
  );
  try {
    const start = performance.now();
    const locking = (async () => {
      for (let i = 0; i < names.length; i += BATCH) {
        await Promise.all(holders.slice(i, i + BATCH).map((h) => h.lock()));
      }
    })();
    if (!await settled(locking, PHASE_MS)) {
      throw new Error(
        `v3lock: the holder's locks were not granted within ${PHASE_MS} ms`,
      );
    }
    const holdMs = performance.now() - start;
    holders.forEach((h, i) => tally.holderTokens[i] = h.token);
    const queueStart = performance.now();
    const granted = Promise.all(
      waiters.map((w, i) =>
        w.lock().then(() => count(tally, i, w.token, performance.now()))
      ),
    );
    granted.catch(() => {});
    const until = performance.now() + PHASE_MS;
    // v3lock says nothing while a request waits: count the keys in etcd.
    while (await keyCount(at(1)) < 2 * names.length) {
      if (performance.now() > until) throw new Error("v3lock: not queued");
      await delay(5);
    }
    const queueMs = performance.now() - queueStart;
    tally.dropAt = performance.now();
    await gateway(at(0), "/v3/lease/revoke", { ID: first.lease });
    // Out of time, the result says how many were re-granted.
    await settled(granted, REGRANT_MS);
    return { holdMs, queueMs };
  } finally {
    first.close();
    other.close();
  }
}

/**
 * Runs the disconnect scenario.
 *
 * @param spec The run: target, ports or endpoints, `locks`.
 * @returns Its result.
 */
export async function runDrop(spec: DriverSpec): Promise<DropResult> {
  const locks = spec.locks ?? 1000;
  const names = Array.from({ length: locks }, (_, i) => `drop-${i}`);
  const tally: Tally = {
    holderTokens: new Array(locks).fill(0),
    dropAt: 0,
    first: null,
    last: null,
    granted: 0,
    overlaps: 0,
    tokenRegressions: 0,
  };
  const { holdMs, queueMs } = spec.target === "v3lock"
    ? await dropV3lock(spec, names, tally)
    : await dropPklock(spec, names, tally);
  const since = (t: number | null) => t === null ? null : round(t);
  return {
    workload: "drop",
    locks,
    holdMs: round(holdMs),
    queueMs: round(queueMs),
    firstMs: since(tally.first),
    lastMs: since(tally.last),
    granted: tally.granted,
    overlaps: tally.overlaps,
    tokenRegressions: tally.tokenRegressions,
  };
}
