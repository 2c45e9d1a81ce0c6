/**
 * Durations on the command line, written as a user would: `90` or `90s`,
 * `500ms`, `1.5m`, `2h`, `1d`.
 *
 * @module
 */

import { InvalidArgumentError } from "commander";
import { MAX_WAIT_MS } from "../protocol/lock_protocol.ts";

const UNITS: Readonly<Record<string, number>> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86400,
};

/**
 * Parses a duration for commander: a number, optionally followed by `ms`,
 * `s`, `m`, `h` or `d`; a bare number is seconds, as in flock(1).
 *
 * @param text The flag's value.
 * @returns The duration in seconds.
 * @throws {InvalidArgumentError} When it is not a duration, or is longer than
 *   a timer can wait (about 24.8 days).
 */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (match === null) {
    throw new InvalidArgumentError(
      "expected a duration such as 30, 90s, 500ms, 1m, 2h (a bare number is seconds)",
    );
  }
  const seconds = Number(match[1]) * UNITS[match[2] ?? "s"]!;
  // Timers cannot wait longer: a longer delay would fire at once.
  if (seconds * 1000 > MAX_WAIT_MS) {
    throw new InvalidArgumentError(
      `expected at most ${MAX_WAIT_MS / 1000} seconds (about 24.8 days)`,
    );
  }
  return seconds;
}
