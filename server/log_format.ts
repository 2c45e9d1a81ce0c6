/**
 * LogTape's default text format, rendering the values a log line usually
 * carries (plain strings, integers, a few plain lock names) without
 * `Deno.inspect`: a mass disconnect logs one line per closed holder, and
 * inspecting each line's values cost more than releasing its lock.
 *
 * @module
 */

import { getTextFormatter, type LogRecord } from "@logtape/logtape";

/** Printable ASCII without `"` or `\`: `Deno.inspect` only adds quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * The longest array `Deno.inspect` keeps on one line for sure: at most six
 * items (more are grouped into columns) and well under its 80-column break.
 */
const MAX_INLINE_ITEMS = 6;
const MAX_INLINE_LENGTH = 60;

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
  if (typeof value === "string" && PLAIN.test(value)) return `"${value}"`;
  if (
    typeof value === "number" && Number.isSafeInteger(value) &&
    !Object.is(value, -0)
  ) {
    return String(value);
  }
  if (Array.isArray(value) && Object.keys(value).length === value.length) {
    const text = inlineNames(value);
    if (text !== null) return text;
  }
  return inspect(value);
}

/**
 * LogTape's default text format (`2026-11-25 06:14:26.157 +00:00 [INF]
 * pklock·server: ...`), byte for byte, with {@linkcode renderLogValue}.
 *
 * @param record A log record.
 * @returns One line of text.
 */
export const textFormatter: (record: LogRecord) => string = getTextFormatter({
  value: renderLogValue,
});
