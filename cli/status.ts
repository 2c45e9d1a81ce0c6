/**
 * `pklock status [PATTERN]`: the locks with their holders and waiters, how
 * long each has held or waited, and how many match.
 *
 * @module
 */

import { InvalidArgumentError } from "commander";
import {
  MAX_STATUS_LIMIT,
  type StatusEntry,
  type StatusResult,
} from "../protocol/lock_protocol.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  type ConnectionFlags,
  connectWith,
  reachedFlags,
  reportFailure,
} from "./connection_flags.ts";
import { StopSignals } from "./stop_signals.ts";

/** Options of {@linkcode status}. */
export interface StatusOptions extends ConnectionFlags {
  /** Print the server's reply as JSON instead of text. */
  json?: boolean;
  /** List at most this many locks. */
  limit?: number;
}

/**
 * Prints the server's status.
 *
 * @param pattern Which locks to list (`*` and `?`); all when absent.
 * @param options Server address, how many locks, and output format.
 * @returns The exit code.
 */
export async function status(
  pattern: string | undefined,
  options: StatusOptions,
): Promise<number> {
  using stop = new StopSignals();
  const code = await report(pattern, options, stop);
  return stop.received === undefined ? code : await stop.dieOf(stop.received);
}

/** Asks for the report and prints it. */
async function report(
  pattern: string | undefined,
  options: StatusOptions,
  stop: StopSignals,
): Promise<number> {
  const client = await connectWith(options, "status", stop);
  if (typeof client === "number") return client;
  await using _client = client;
  let result: StatusResult;
  try {
    // The client gives up on a silent server after --connect-timeout.
    result = await stop.race(
      client.status({ pattern, limit: options.limit }),
    );
  } catch (error) {
    if (stop.code !== undefined) return stop.code;
    return reportFailure(error, reachedFlags(options, client));
  }
  console.log(
    options.json ? JSON.stringify(result, null, 2) : format(result, pattern),
  );
  return ExitCode.Ok;
}

/**
 * Parses `--limit`.
 *
 * @param text The flag's value.
 * @returns The limit.
 * @throws {InvalidArgumentError} When it is not a whole number in range.
 */
export function parseLimit(text: string): number {
  const limit = Number(text);
  if (!/^\d+$/.test(text) || limit > MAX_STATUS_LIMIT) {
    throw new InvalidArgumentError(
      `expected a number of locks from 0 to ${MAX_STATUS_LIMIT}`,
    );
  }
  return limit;
}

/**
 * Renders a status report for people.
 *
 * @param result The server's status report.
 * @param pattern The pattern asked for, if any.
 * @returns Lines of text.
 */
export function format(
  result: StatusResult,
  pattern: string | undefined,
): string {
  const { server, connections, locks, totals, cluster } = result;
  const lines = [
    `pklock ${server.version} (protocol ${server.protocol}), up ${
      duration(server.uptime)
    }; ${
      count(connections.current, "connection")
    } open, ${connections.total} since start`,
  ];
  if (cluster !== undefined) {
    lines.push(
      `cluster node ${cluster.node}; live nodes: ${cluster.nodes.join(", ")}`,
    );
  }
  const matching = pattern === undefined ? "" : ` matching "${pattern}"`;
  if ((totals?.locks ?? locks.length) === 0) {
    lines.push(`No locks${matching} held or waited for.`);
  }
  for (const lock of locks) {
    const limit = lock.limit === undefined
      ? ""
      : `, ${lock.holders.length} of ${lock.limit} slots`;
    lines.push(`lock "${lock.name}" (${lock.mode}${limit})`);
    for (const holder of lock.holders) {
      lines.push(
        `  held by ${who(holder)} for ${
          elapsed(holder.elapsed)
        } (since ${holder.since}), ${
          holder.token === undefined
            ? "token not known on this node"
            : `token ${holder.token}`
        }`,
      );
    }
    lock.waiters.forEach((waiter, i) => {
      lines.push(
        `  ${i + 1}. waiting: ${who(waiter)} (${waiter.mode}) for ${
          elapsed(waiter.elapsed)
        } (since ${waiter.since})`,
      );
    });
  }
  if (totals !== undefined && totals.locks > 0) {
    const listed = locks.length < totals.locks
      ? `${locks.length} of ${totals.locks}`
      : `${totals.locks}`;
    lines.push(
      `${listed} ${totals.locks === 1 ? "lock" : "locks"}${matching}: ${
        count(totals.holders, "holder")
      }, ${count(totals.waiters, "waiter")}`,
    );
  }
  return lines.join("\n");
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function who(request: StatusEntry): string {
  const label = request.label === undefined ? "" : ` (${request.label})`;
  const node = request.node === undefined ? "" : ` on node ${request.node}`;
  return `connection ${request.connectionId}${node} from ${request.peer}${label}`;
}

/** A hold's or wait's length: tenths of a second while it is short. */
function elapsed(seconds: number): string {
  return seconds < 10 ? `${seconds.toFixed(1)}s` : duration(seconds);
}

function duration(seconds: number): string {
  const s = Math.floor(seconds);
  const parts = [
    [Math.floor(s / 86400), "d"],
    [Math.floor(s / 3600) % 24, "h"],
    [Math.floor(s / 60) % 60, "m"],
  ] as const;
  const shown = parts.filter(([n]) => n > 0).map(([n, unit]) => `${n}${unit}`);
  return [...shown, `${s % 60}s`].join(" ");
}
