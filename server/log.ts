/**
 * Logging for the server process: LogTape records to standard error, so that
 * standard output carries only what the program prints on purpose.
 *
 * @module
 */

import {
  ansiColorFormatter,
  configure,
  defaultTextFormatter,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

const encoder = new TextEncoder();
const pending: string[] = [];

/**
 * Writes the log lines buffered so far. Lines are written once per tick (a
 * burst of releases after a mass disconnect costs one write, not thousands);
 * call this before exiting so none is lost.
 */
export function flushLogs(): void {
  if (pending.length === 0) return;
  const bytes = encoder.encode(pending.join(""));
  pending.length = 0;
  try {
    let written = 0;
    while (written < bytes.length) {
      written += Deno.stderr.writeSync(bytes.subarray(written));
    }
  } catch {
    // Standard error is gone (a closed pipe): losing log lines is better than
    // a server that dies and takes every lock with it.
  }
}

/**
 * Sends pklock's logs at `level` and above to standard error: JSON lines, or
 * text (colored on a terminal).
 *
 * @param level The lowest level written.
 * @param format `text` or `json`.
 */
export async function configureLogging(
  level: LogLevel,
  format: "text" | "json" = "text",
): Promise<void> {
  const formatter = format === "json"
    ? jsonLinesFormatter
    : Deno.stderr.isTerminal()
    ? ansiColorFormatter
    : defaultTextFormatter;
  await configure({
    reset: true,
    sinks: {
      stderr: (record: LogRecord) => {
        pending.push(formatter(record));
        if (record.level === "error" || record.level === "fatal") flushLogs();
        else if (pending.length === 1) setTimeout(flushLogs, 0);
      },
    },
    loggers: [
      { category: ["pklock"], lowestLevel: level, sinks: ["stderr"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["stderr"],
      },
    ],
  });
}
