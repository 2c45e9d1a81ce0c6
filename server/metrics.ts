/**
 * Prometheus metrics of the lock server, and the optional HTTP listener that
 * serves them at `/metrics` with a health check at `/healthz`. The server
 * only counts; values that are cheaper to read than to track (open
 * connections, locks held and waiting) are read when scraped.
 *
 * @module
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { globToRegExp, matchesAny } from "./glob.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import type { ReleaseCause } from "./lock_space.ts";

/**
 * What turned a peer away before it could use the server (the `cause` label):
 * the allow-list, a connection limit, or authentication.
 */
export type RejectedBy = "allow_list" | "limit" | "auth";

/** What the metrics read from the server when scraped. */
export interface MetricsSources {
  /** Connections open now. */
  connections(): number;
  /** Every lock name held or waited for. */
  names(): Iterable<string>;
  /** Holders and waiters of one lock, or `null` when nobody has it. */
  lock(name: string): { holders: number; waiters: number } | null;
  /** When the oldest hold still held was granted (ms since the epoch). */
  oldestHold(): number | undefined;
  /** Audit entries dropped so far because the audit file took no bytes. */
  auditDropped(): number;
}

/** How a lock request was answered, as `pklock_lock_answers_total` counts. */
export type AnswerStatus = "ok" | "busy" | "timeout" | "cancelled";

const SECONDS_BUCKETS = [
  0.0005,
  0.001,
  0.005,
  0.01,
  0.05,
  0.1,
  0.5,
  1,
  5,
  10,
  60,
  300,
  1800,
  3600,
];

/**
 * The lock server's metrics.
 *
 * @example Counting a grant
 * ```ts ignore
 * const metrics = new Metrics(["jobs.*"], sources);
 * metrics.granted("jobs.nightly", 0.012);
 * console.log(await metrics.render());
 * ```
 */
export class Metrics {
  /** The registry every metric is in. */
  readonly registry: Registry = new Registry();
  /** Whether some lock names have series of their own (`lockPatterns`). */
  readonly perLock: boolean;
  readonly #patterns: RegExp[];
  readonly #connections: Counter;
  readonly #rejected: Counter;
  readonly #grants: Counter;
  readonly #releases: Counter;
  readonly #timeouts: Counter;
  readonly #alarms: Counter;
  readonly #errors: Counter;
  readonly #wait: Histogram;
  readonly #hold: Histogram;
  readonly #lockGrants: Counter;
  readonly #answers: Counter;

  /**
   * Creates the metrics.
   *
   * @param lockPatterns Lock names with series of their own (bounded
   *   cardinality: names matching none are only counted in totals).
   * @param sources What is read at scrape time.
   */
  constructor(lockPatterns: readonly string[], sources: MetricsSources) {
    this.#patterns = lockPatterns.map(globToRegExp);
    this.perLock = lockPatterns.length > 0;
    const registers = [this.registry];
    const patterns = this.#patterns;
    new Gauge({
      name: "pklock_build_info",
      help: "Always 1: the server's version, protocol and Deno runtime.",
      labelNames: ["version", "protocol", "deno"],
      registers,
    }).set({
      version: VERSION,
      protocol: String(PROTOCOL_VERSION),
      deno: Deno.version.deno,
    }, 1);
    new Gauge({
      name: "pklock_connections",
      help: "Connections open now.",
      registers,
      collect() {
        this.set(sources.connections());
      },
    });
    this.#connections = new Counter({
      name: "pklock_connections_total",
      help: "Connections accepted since start-up.",
      registers,
    });
    this.#rejected = new Counter({
      name: "pklock_connections_rejected_total",
      help: "Connections refused, by cause: allow_list, limit, auth.",
      labelNames: ["cause"],
      registers,
    });
    new Gauge({
      name: "pklock_locks_held",
      help: "Holds now (a shared lock with three holders counts three).",
      registers,
      collect() {
        this.set(sum(sources, "holders"));
      },
    });
    new Gauge({
      name: "pklock_locks_waiting",
      help: "Requests waiting in queues now.",
      registers,
      collect() {
        this.set(sum(sources, "waiters"));
      },
    });
    this.#grants = new Counter({
      name: "pklock_grants_total",
      help: "Locks granted.",
      registers,
    });
    this.#releases = new Counter({
      name: "pklock_releases_total",
      help: "Holds ended, by cause: client, disconnect, force.",
      labelNames: ["cause"],
      registers,
    });
    this.#answers = new Counter({
      name: "pklock_lock_answers_total",
      help:
        "Lock requests answered, by status: ok (granted), busy (wait 0 on a taken lock), timeout (the wait ran out), cancelled (withdrawn).",
      labelNames: ["status"],
      registers,
    });
    new Gauge({
      name: "pklock_oldest_hold_seconds",
      help:
        "How long the oldest hold still held has been held (0 when nothing is): a stuck holder shows before it lets go.",
      registers,
      collect() {
        const since = sources.oldestHold();
        this.set(since === undefined ? 0 : (Date.now() - since) / 1000);
      },
    });
    new Counter({
      name: "pklock_audit_dropped_total",
      help:
        "Audit entries dropped because the audit file took no more bytes (0 without an audit log).",
      registers,
      collect() {
        this.reset();
        this.inc(sources.auditDropped());
      },
    });
    this.#timeouts = new Counter({
      name: "pklock_wait_timeouts_total",
      help: "Requests whose wait ran out.",
      registers,
    });
    this.#alarms = new Counter({
      name: "pklock_hold_alarms_total",
      help: "Holds that passed their hold-time alarm threshold.",
      registers,
    });
    this.#errors = new Counter({
      name: "pklock_protocol_errors_total",
      help: "Error replies and refusals, by code.",
      labelNames: ["code"],
      registers,
    });
    this.#wait = new Histogram({
      name: "pklock_wait_seconds",
      help: "Time from request to grant.",
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#hold = new Histogram({
      name: "pklock_hold_seconds",
      help: "Time from grant to release.",
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#lockGrants = new Counter({
      name: "pklock_lock_grants_total",
      help: "Grants of each lock matching the configured patterns.",
      labelNames: ["lock"],
      registers,
    });
    const perLock = (name: string, help: string, key: "holders" | "waiters") =>
      new Gauge({
        name,
        help,
        labelNames: ["lock"],
        registers,
        collect() {
          this.reset();
          for (const lock of sources.names()) {
            if (!matchesAny(patterns, lock)) continue;
            this.set({ lock }, sources.lock(lock)?.[key] ?? 0);
          }
        },
      });
    perLock(
      "pklock_lock_holders",
      "Holders of each lock matching the configured patterns.",
      "holders",
    );
    perLock(
      "pklock_lock_waiters",
      "Waiters of each lock matching the configured patterns.",
      "waiters",
    );
  }

  /** Counts an accepted connection. */
  opened(): void {
    this.#connections.inc();
  }

  /**
   * Counts a refused connection.
   *
   * @param cause Why it was refused.
   */
  rejected(cause: RejectedBy): void {
    this.#rejected.inc({ cause });
  }

  /**
   * Counts a grant.
   *
   * @param name The lock.
   * @param waited Seconds from request to grant.
   */
  granted(name: string, waited: number): void {
    this.#grants.inc();
    this.#answers.inc({ status: "ok" });
    this.#wait.observe(waited);
    if (matchesAny(this.#patterns, name)) this.#lockGrants.inc({ lock: name });
  }

  /**
   * Counts the end of a hold.
   *
   * @param cause How it ended.
   * @param held Seconds from grant to release.
   */
  released(cause: ReleaseCause, held: number): void {
    this.#releases.inc({ cause });
    this.#hold.observe(held);
  }

  /** Counts a wait that ran out. */
  timedOut(): void {
    this.#timeouts.inc();
    this.#answers.inc({ status: "timeout" });
  }

  /**
   * Counts a request answered `busy` or `cancelled`.
   *
   * @param status The answer.
   */
  answered(status: "busy" | "cancelled"): void {
    this.#answers.inc({ status });
  }

  /**
   * Drops a lock's own series once nobody holds or waits for it, so that
   * names that come and go do not grow the exposition for good.
   *
   * @param name The lock, no longer in the table.
   */
  vacated(name: string): void {
    if (matchesAny(this.#patterns, name)) {
      this.#lockGrants.remove({ lock: name });
    }
  }

  /** Counts a hold-time alarm. */
  alarmed(): void {
    this.#alarms.inc();
  }

  /**
   * Counts an error reply or refusal.
   *
   * @param code Its stable code.
   */
  error(code: string): void {
    this.#errors.inc({ code });
  }

  /**
   * Renders every metric in the Prometheus text format.
   *
   * @returns The exposition text.
   */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}

function sum(sources: MetricsSources, key: "holders" | "waiters"): number {
  let total = 0;
  for (const name of sources.names()) total += sources.lock(name)?.[key] ?? 0;
  return total;
}

/** Options of {@linkcode serveMetrics}. */
export interface MetricsListenOptions {
  /** The address to listen on. */
  hostname: string;
  /** The port; 0 picks a free one. */
  port: number;
}

/**
 * Serves `/metrics` and `/healthz` over HTTP.
 *
 * @param metrics The metrics to serve.
 * @param options Where to listen.
 * @returns The HTTP server; `shutdown()` stops it.
 */
export function serveMetrics(
  metrics: Metrics,
  options: MetricsListenOptions,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: () => {},
  }, async (request) => {
    const { pathname } = new URL(request.url);
    const head = request.method === "HEAD";
    if (!head && request.method !== "GET") {
      return new Response("Method not allowed\n", {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
    }
    if (pathname === "/metrics") {
      // HEAD answers as GET would, without rendering every series.
      return new Response(head ? null : await metrics.render(), {
        headers: { "content-type": metrics.registry.contentType },
      });
    }
    if (pathname === "/healthz") return new Response(head ? null : "ok\n");
    return new Response("Not found\n", { status: 404 });
  });
}
