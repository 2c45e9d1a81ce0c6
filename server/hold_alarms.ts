/**
 * Hold-time alarms: the threshold past which a hold is reported (a warning,
 * a metric, an event to the holder). An alarm never ends a hold: pklock has no
 * lease timeouts.
 *
 * @module
 */

import { globToRegExp } from "./glob.ts";

/** Hold-time alarm thresholds, in milliseconds. */
export interface HoldAlarmSettings {
  /** The threshold of locks that match no rule; absent: no alarm. */
  holdTime?: number | undefined;
  /** Thresholds by lock-name pattern (`*`, `?`); the first match wins. */
  rules?: { pattern: string; holdTime: number }[] | undefined;
}

/**
 * Hold-time thresholds by lock name: the first matching rule, else the
 * default.
 *
 * @example A default and one rule
 * ```ts
 * import { HoldAlarms } from "./hold_alarms.ts";
 * const alarms = new HoldAlarms({
 *   holdTime: 60_000,
 *   rules: [{ pattern: "report-*", holdTime: 3_600_000 }],
 * });
 * console.assert(alarms.thresholdFor("report-daily") === 3_600_000);
 * ```
 */
export class HoldAlarms {
  readonly #rules: { pattern: RegExp; holdTime: number }[];
  readonly #default: number | undefined;

  /**
   * Compiles the rules.
   *
   * @param settings The default threshold and the rules.
   */
  constructor(settings: HoldAlarmSettings) {
    this.#rules = (settings.rules ?? []).map((rule) => ({
      pattern: globToRegExp(rule.pattern),
      holdTime: rule.holdTime,
    }));
    this.#default = settings.holdTime;
  }

  /**
   * The threshold of a lock.
   *
   * @param name The lock.
   * @returns Milliseconds, or `undefined` for no alarm.
   */
  thresholdFor(name: string): number | undefined {
    for (const rule of this.#rules) {
      if (rule.pattern.test(name)) return rule.holdTime;
    }
    return this.#default;
  }
}
