/**
 * `pklock status`: every lock with its holders and waiters.
 *
 * @module
 */

import type { StatusEntry, StatusResult } from "../protocol/lock_protocol.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  type ConnectionFlags,
  connectWith,
  reportFailure,
} from "./connection_flags.ts";
import { StopSignals } from "./stop_signals.ts";

/** Options of {@linkcode status}. */
export interface StatusOptions extends ConnectionFlags {
  /** Print the server's reply as JSON instead of text. */
  json?: boolean;
}

/**
 * Prints the server's status.
 *
 * @param options Server address and output format.
 * @returns The exit code.
 */
export async function status(options: StatusOptions): Promise<number> {
  using stop = new StopSignals();
  const code = await report(options, stop);
  return stop.received === undefined ? code : await stop.dieOf(stop.received);
}

/** Asks for the report and prints it. */
async function report(
  options: StatusOptions,
  stop: StopSignals,
): Promise<number> {
  const client = await connectWith(options, "status", stop);
  if (typeof client === "number") return client;
  await using _client = client;
  let result: StatusResult;
  try {
    // The client gives up on a silent server after --connect-timeout.
    result = await stop.race(client.status());
  } catch (error) {
    if (stop.code !== undefined) return stop.code;
    return reportFailure(error, options);
  }
  console.log(options.json ? JSON.stringify(result, null, 2) : format(result));
  return ExitCode.Ok;
}

/**
 * Renders a status report for people.
 *
 * @param result The server's status report.
 * @returns Lines of text.
 */
function format(result: StatusResult): string {
  const { server, connections, locks } = result;
  const lines = [
    `pklock ${server.version} (protocol ${server.protocol}), up ${
      duration(server.uptime)
    }; ${
      count(connections.current, "connection")
    } open, ${connections.total} since start`,
  ];
  if (locks.length === 0) lines.push("No locks held or waited for.");
  for (const lock of locks) {
    const limit = lock.limit === undefined
      ? ""
      : `, ${lock.holders.length} of ${lock.limit} slots`;
    lines.push(`lock "${lock.name}" (${lock.mode}${limit})`);
    for (const holder of lock.holders) {
      lines.push(
        `  held by ${who(holder)} since ${holder.since}, token ${holder.token}`,
      );
    }
    lock.waiters.forEach((waiter, i) => {
      lines.push(
        `  ${i + 1}. waiting: ${
          who(waiter)
        } (${waiter.mode}) since ${waiter.since}`,
      );
    });
  }
  return lines.join("\n");
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function who(request: StatusEntry): string {
  const label = request.label === undefined ? "" : ` (${request.label})`;
  return `connection ${request.connectionId} from ${request.peer}${label}`;
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
