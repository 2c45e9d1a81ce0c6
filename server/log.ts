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
  getTextFormatter,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";
import { delay } from "../message/io.ts";
import { LogSink } from "./log_sink.ts";

/** Printable ASCII without `"` or `\`: `Deno.inspect` only adds quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * Renders the values in a log line as LogTape's default text formatter does,
 * without the cost of `Deno.inspect` for plain strings and integers (a mass
 * disconnect logs one line per released lock).
 *
 * @param value A value from the message template.
 * @param inspect LogTape's renderer, for every other value.
 * @returns The rendered value.
 */
function renderLogValue(
  value: unknown,
  inspect: (value: unknown) => string,
): string {
  if (typeof value === "string" && PLAIN.test(value)) return `"${value}"`;
  if (
    typeof value === "number" && Number.isSafeInteger(value) &&
    !Object.is(value, -0)
  ) {
    return String(value);
  }
  return inspect(value);
}

/** LogTape's default text format, with {@linkcode renderLogValue}. */
const slowTextFormatter = getTextFormatter({ value: renderLogValue });

/** How LogTape's text formatter inspects values under Deno. */
function inspect(value: unknown): string {
  return Deno.inspect(value, {
    strAbbreviateSize: Infinity,
    iterableLimit: Infinity,
  });
}

const LEVELS: Record<LogLevel, string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};
/** Text LogTape would escape or parse specially: control characters, braces. */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const SPECIAL = /[\x00-\x1f\x7f-\x9f{}]/;
/**
 * Templates cut into literal text and property names, alternately; `null`
 * for those with more than plain `{name}` placeholders. Log templates are
 * constants in the code, so the cache stays small.
 */
const templates = new Map<string, string[] | null>();

function cut(template: string): string[] | null {
  let parts = templates.get(template);
  if (parts === undefined) {
    parts = template.split(/\{(\w+)\}/);
    if (parts.some((part, i) => i % 2 === 0 && SPECIAL.test(part))) {
      parts = null;
    }
    templates.set(template, parts);
  }
  return parts;
}

/**
 * LogTape's default text format (`2026-11-25 06:14:26.157 +00:00 [INF]
 * pklock·server: ...`), written without parsing each record's template again;
 * records it cannot render the same way go to LogTape's formatter.
 *
 * @param record A log record.
 * @returns One line of text.
 */
export function textFormatter(record: LogRecord): string {
  const parts = typeof record.rawMessage === "string"
    ? cut(record.rawMessage)
    : null;
  if (parts === null || record.category.some((part) => SPECIAL.test(part))) {
    return slowTextFormatter(record);
  }
  const properties = record.properties;
  let message = parts[0]!;
  for (let i = 1; i < parts.length; i += 2) {
    message += renderLogValue(properties[parts[i]!], inspect) + parts[i + 1]!;
  }
  const iso = new Date(record.timestamp).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 23)} +00:00 [${
    LEVELS[record.level]
  }] ${record.category.join("·")}: ${message}\n`;
}

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
    : textFormatter;
  const queue = sink = new LogSink(Deno.stderr, {
    formatDropped: (count) => formatter(droppedRecord(count)),
  });
  await configure({
    reset: true,
    sinks: { stderr: (record: LogRecord) => queue.write(formatter(record)) },
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
