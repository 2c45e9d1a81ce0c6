/**
 * Logging for the server process: LogTape records to standard error, so that
 * standard output carries only what the program prints on purpose, through a
 * {@linkcode LogSink} so that an unread standard error never blocks it.
 *
 * @module
 */

import {
  ansiColorFormatter,
  configure,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";
import { delay } from "../message/io.ts";
import { textFormatter } from "./log_format.ts";
import { LogSink } from "./log_sink.ts";

/** Where log lines queue; the first `configureLogging` creates it. */
let sink: LogSink | null = null;

/**
 * Writes the log lines queued so far, unless standard error is not taking
 * bytes (then they stay queued or are lost at exit: logging never blocks).
 * Call this before exiting.
 */
export function flushLogs(): void {
  sink?.flushSync();
}

/**
 * Waits until the log lines queued so far are written, for at most `ms`
 * milliseconds: on the way out, standard error gets a chance, not a veto.
 *
 * @param ms The longest wait.
 */
export async function drainLogs(ms: number): Promise<void> {
  const done = new AbortController();
  await Promise.race([sink?.flush(), delay(ms, done.signal)]);
  done.abort();
}

/**
 * Whether the environment asks for no colour (https://no-color.org: any
 * non-empty `NO_COLOR`); without permission to read it, colour stays.
 */
function noColor(): boolean {
  try {
    return (Deno.env.get("NO_COLOR") ?? "") !== "";
  } catch {
    return false;
  }
}

/** The warning that stands for `count` lines dropped from a full queue. */
function droppedRecord(count: number): LogRecord {
  const rawMessage =
    "Dropped {count} log lines: standard error was not read fast enough";
  return {
    category: ["pklock", "log"],
    level: "warning",
    message: [
      "Dropped ",
      count,
      " log lines: standard error was not read fast enough",
    ],
    rawMessage,
    properties: { count },
    timestamp: Date.now(),
  };
}

/**
 * Sends pklock's logs at `level` and above to standard error: JSON lines, or
 * text (colored on a terminal).
 *
 * @param level The lowest level written; `warn` means `warning`.
 * @param format `text` or `json`.
 */
export async function configureLogging(
  level: LogLevel | "warn",
  format: "text" | "json" = "text",
): Promise<void> {
  const lowestLevel = level === "warn" ? "warning" : level;
  const formatter = format === "json"
    ? jsonLinesFormatter
    : Deno.stderr.isTerminal() && !noColor()
    ? ansiColorFormatter
    : textFormatter;
  const queue = sink = new LogSink(Deno.stderr, {
    formatDropped: (count) => formatter(droppedRecord(count)),
  });
  await configure({
    reset: true,
    sinks: { stderr: (record: LogRecord) => queue.write(formatter(record)) },
    loggers: [
      { category: ["pklock"], lowestLevel, sinks: ["stderr"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["stderr"],
      },
    ],
  });
}
