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
        Deno.stderr.writeSync(encoder.encode(formatter(record)));
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
