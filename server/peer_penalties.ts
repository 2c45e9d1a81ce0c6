/**
 * Per-peer bookkeeping that costs the server nothing per event: warnings
 * written at most once per peer per interval (with the count of those left
 * out), and a growing penalty for failed secret guesses. Both are checked
 * against the clock when an event arrives; no timer runs, nothing blocks, and
 * the tables of peers are bounded.
 *
 * @module
 */

/** The most peers either table tracks; past it, all others share one key. */
export const MAX_TRACKED_PEERS = 10_000;

/** The key every peer beyond {@linkcode MAX_TRACKED_PEERS} shares. */
const OTHERS = "*";

/** Options of {@linkcode WarningThrottle}. */
export interface WarningThrottleOptions {
  /**
   * The shortest time between two warnings about one peer, in ms.
   *
   * @default {10000}
   */
  intervalMs?: number | undefined;
  /**
   * The clock, in ms.
   *
   * @default {performance.now}
   */
  now?: (() => number) | undefined;
}

/**
 * Lets through one warning per peer per interval; the next one let through
 * carries how many were left out in between.
 *
 * @example One line per peer per interval
 * ```ts
 * import { WarningThrottle } from "./peer_penalties.ts";
 * const throttle = new WarningThrottle({ intervalMs: 10_000 });
 * console.assert(throttle.admit("10.0.0.1") === 0);
 * console.assert(throttle.admit("10.0.0.1") === null);
 * ```
 */
export class WarningThrottle {
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #peers: PeerTable<{ until: number; suppressed: number }>;

  /**
   * Starts with no peer seen.
   *
   * @param options The interval and the clock.
   */
  constructor(options: WarningThrottleOptions = {}) {
    this.#intervalMs = options.intervalMs ?? 10_000;
    this.#now = options.now ?? (() => performance.now());
    this.#peers = new PeerTable(this.#intervalMs);
  }

  /**
   * Asks whether to write a warning about a peer now.
   *
   * @param peer The peer's IP address.
   * @returns `null` to leave it out (it is counted), else how many warnings
   *   about this peer were left out since the last one written.
   */
  admit(peer: string): number | null {
    const now = this.#now();
    const peers = this.#peers.entries;
    const key = this.#peers.keyOf(peer, now, (entry) => entry.until <= now);
    const entry = peers.get(key);
    if (entry !== undefined && now < entry.until) {
      entry.suppressed++;
      return null;
    }
    peers.set(key, { until: now + this.#intervalMs, suppressed: 0 });
    return entry?.suppressed ?? 0;
  }
}

/** Options of {@linkcode GuessPenalty}. */
export interface GuessPenaltyOptions {
  /**
   * The penalty after a first failure, in ms; each failure in a row doubles
   * it.
   *
   * @default {100}
   */
  baseMs?: number | undefined;
  /**
   * The longest penalty, in ms.
   *
   * @default {10000}
   */
  maxMs?: number | undefined;
  /**
   * The clock, in ms.
   *
   * @default {performance.now}
   */
  now?: (() => number) | undefined;
}

/**
 * Slows down guessing a secret: after a failed guess, a peer's next guesses
 * are refused unchecked until its penalty ends, and each failure in a row
 * doubles the penalty, up to a bound. Refusing, rather than delaying the
 * answer, keeps no request, timer or connection waiting on the server.
 *
 * @example A penalty that doubles
 * ```ts
 * import { GuessPenalty } from "./peer_penalties.ts";
 * let now = 0;
 * const penalty = new GuessPenalty({ baseMs: 100, now: () => now });
 * console.assert(penalty.failed("10.0.0.1") === 100);
 * now = 100;
 * console.assert(penalty.failed("10.0.0.1") === 200);
 * console.assert(penalty.remaining("10.0.0.1") === 200);
 * ```
 */
export class GuessPenalty {
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #now: () => number;
  readonly #peers: PeerTable<{ until: number; failures: number }>;

  /**
   * Starts with no peer penalized.
   *
   * @param options The penalties and the clock.
   */
  constructor(options: GuessPenaltyOptions = {}) {
    this.#baseMs = options.baseMs ?? 100;
    this.#maxMs = options.maxMs ?? 10_000;
    this.#now = options.now ?? (() => performance.now());
    this.#peers = new PeerTable(this.#maxMs);
  }

  /**
   * How long a peer must wait before its next guess is checked.
   *
   * @param peer The peer's IP address.
   * @returns Milliseconds; 0 when it may guess now.
   */
  remaining(peer: string): number {
    const entry = this.#peers.get(peer);
    return entry === undefined ? 0 : Math.max(0, entry.until - this.#now());
  }

  /**
   * A peer's guess was checked and wrong.
   *
   * @param peer The peer's IP address.
   * @returns The penalty it now serves, in ms.
   */
  failed(peer: string): number {
    const now = this.#now();
    // A peer is forgotten once it has been quiet for the longest penalty.
    const peers = this.#peers.entries;
    const key = this.#peers.keyOf(
      peer,
      now,
      (entry) => entry.until + this.#maxMs <= now,
    );
    const entry = peers.get(key);
    const failures = entry !== undefined && now < entry.until + this.#maxMs
      ? entry.failures + 1
      : 1;
    const ms = Math.min(this.#baseMs * 2 ** (failures - 1), this.#maxMs);
    peers.set(key, { until: now + ms, failures });
    return ms;
  }

  /**
   * A peer's guess was right: its failures are forgotten.
   *
   * @param peer The peer's IP address.
   */
  succeeded(peer: string): void {
    this.#peers.entries.delete(peer);
  }
}

/**
 * Entries by peer, at most {@linkcode MAX_TRACKED_PEERS}: when full, entries
 * that no longer matter are dropped (at most once per `sweepMs`, so a flood
 * from many addresses costs no scan per event), and peers that still find no
 * room share one entry.
 */
class PeerTable<V> {
  readonly entries = new Map<string, V>();
  readonly #sweepMs: number;
  #sweptAt = -Infinity;

  constructor(sweepMs: number) {
    this.#sweepMs = sweepMs;
  }

  get(peer: string): V | undefined {
    return this.entries.get(peer) ?? this.entries.get(OTHERS);
  }

  /** The key `peer` is tracked under now. */
  keyOf(peer: string, now: number, expired: (entry: V) => boolean): string {
    const entries = this.entries;
    if (entries.has(peer) || entries.size < MAX_TRACKED_PEERS) return peer;
    if (now - this.#sweptAt >= this.#sweepMs) {
      this.#sweptAt = now;
      for (const [key, entry] of entries) {
        if (expired(entry)) entries.delete(key);
      }
    }
    return entries.size < MAX_TRACKED_PEERS ? peer : OTHERS;
  }
}
