/**
 * LogTape's default text format, written without LogTape's per-record work
 * for the lines pklock writes: the template is cut once and cached, and the
 * values a log line usually carries (plain strings, integers, a few plain lock
 * names) are rendered without `Deno.inspect`. A mass disconnect logs one line
 * per closed holder; inspecting each line's values, and parsing each line's
 * template again, cost more than releasing its lock.
 *
 * @module
 */

import { getTextFormatter, type LogRecord } from "@logtape/logtape";

/** Printable ASCII without `"` or `\`: `Deno.inspect` only adds quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * Text LogTape would sanitize (control characters) or parse specially
 * (braces that are not a plain `{name}`).
 */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const SPECIAL = /[\x00-\x1f\x7f-\x9f{}]/;

/**
 * The longest array `Deno.inspect` keeps on one line for sure: at most six
 * items (more are grouped into columns) and well under its 80-column break.
 */
const MAX_INLINE_ITEMS = 6;
const MAX_INLINE_LENGTH = 60;

/** LogTape's level abbreviations. */
const LEVELS: Readonly<Record<LogRecord["level"], string>> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};

/**
 * The timestamps whose ISO text has LogTape's four-digit year: from 1000 to
 * 9999.
 */
const FIRST_TIME = Date.UTC(1000, 0, 1);
const LAST_TIME = Date.UTC(10_000, 0, 1);

/** `[ "a", "b" ]` for plain strings that fit one line; otherwise `null`. */
function inlineNames(items: readonly unknown[]): string | null {
  if (items.length === 0) return "[]";
  if (items.length > MAX_INLINE_ITEMS) return null;
  let text = "[ ";
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== "string" || !PLAIN.test(item)) return null;
    text += i === 0 ? `"${item}"` : `, "${item}"`;
  }
  text += " ]";
  return text.length <= MAX_INLINE_LENGTH ? text : null;
}

/**
 * A value as `Deno.inspect` renders it, for plain strings, integers and short
 * arrays of plain strings; `null` for every other value.
 */
function plainValue(value: unknown): string | null {
  if (typeof value === "string") return PLAIN.test(value) ? `"${value}"` : null;
  if (
    typeof value === "number" && Number.isSafeInteger(value) &&
    !Object.is(value, -0)
  ) {
    return String(value);
  }
  if (Array.isArray(value) && Object.keys(value).length === value.length) {
    return inlineNames(value);
  }
  return null;
}

/**
 * Renders a value of a log line exactly as LogTape's default text formatter
 * does under Deno, without `Deno.inspect` for plain strings, integers and
 * short arrays of plain strings.
 *
 * @param value A value from the message template.
 * @param inspect LogTape's renderer, for every other value.
 * @returns The rendered value.
 */
export function renderLogValue(
  value: unknown,
  inspect: (value: unknown) => string,
): string {
  return plainValue(value) ?? inspect(value);
}

/** LogTape's default text format, with {@linkcode renderLogValue}. */
const logTapeFormatter = getTextFormatter({ value: renderLogValue });

/**
 * Templates cut into literal text and property names, alternately; `null`
 * for those LogTape would parse or sanitize otherwise. Log templates are
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

/** Each logger's category as the line shows it; `null` if LogTape escapes it. */
const categories = new WeakMap<readonly string[], string | null>();

function categoryText(category: readonly string[]): string | null {
  let text = categories.get(category);
  if (text === undefined) {
    text = category.some((part) => SPECIAL.test(part))
      ? null
      : category.join("·");
    categories.set(category, text);
  }
  return text;
}

/** The last timestamp rendered: a burst of lines shares its millisecond. */
let lastTime = NaN;
let lastStamp = "";

function stamp(time: number): string {
  if (time !== lastTime) {
    const iso = new Date(time).toISOString();
    lastStamp = `${iso.slice(0, 10)} ${iso.slice(11, 23)} +00:00`;
    lastTime = time;
  }
  return lastStamp;
}

/**
 * The line of a record whose template, category, timestamp and values all
 * have a plain rendering; `null` for any other.
 */
function plainLine(record: LogRecord): string | null {
  const { rawMessage, timestamp } = record;
  if (typeof rawMessage !== "string") return null;
  if (!(timestamp >= FIRST_TIME && timestamp < LAST_TIME)) return null;
  const parts = cut(rawMessage);
  const category = categoryText(record.category);
  if (parts === null || category === null) return null;
  const properties = record.properties;
  let message = parts[0]!;
  for (let i = 1; i < parts.length; i += 2) {
    const value = plainValue(properties[parts[i]!]);
    if (value === null) return null;
    message += value + parts[i + 1]!;
  }
  return `${stamp(timestamp)} [${
    LEVELS[record.level]
  }] ${category}: ${message}\n`;
}

/**
 * LogTape's default text format (`2026-11-25 06:14:26.157 +00:00 [INF]
 * pklock·server: ...`), byte for byte: pklock's own lines are written
 * without LogTape's formatter, every other record goes through it.
 *
 * @param record A log record.
 * @returns One line of text.
 */
export function textFormatter(record: LogRecord): string {
  return plainLine(record) ?? logTapeFormatter(record);
}
