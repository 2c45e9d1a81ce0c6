import assert from "node:assert/strict";
import fc from "fast-check";
import {
  configure,
  defaultTextFormatter,
  getLogger,
  type LogLevel,
  type LogRecord,
  reset,
} from "@logtape/logtape";
import { textFormatter } from "./log_format.ts";

/**
 * An info record whose template interpolates `values` as `{0}`, `{1}`...,
 * its message parts as LogTape parses them from the template.
 */
function record(values: unknown[]): LogRecord {
  const rawMessage = "Values " + values.map((_, i) => `{${i}}`).join(", ") +
    ".";
  const properties: Record<string, unknown> = {};
  values.forEach((value, i) => properties[String(i)] = value);
  const message = rawMessage.split(/\{(\d+)\}/).map((part, i) =>
    i % 2 === 0 ? part : values[Number(part)]
  );
  return {
    category: ["pklock", "server"],
    level: "info",
    message,
    rawMessage,
    properties,
    timestamp: Date.UTC(2026, 10, 25, 6, 14, 26, 157),
  };
}

const plain = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
});
const anyString = fc.string({ unit: "binary" });
const value = fc.oneof(
  plain,
  anyString,
  fc.integer(),
  fc.double(),
  fc.constant(-0),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.array(plain, { maxLength: 8 }),
  fc.array(
    fc.string({
      maxLength: 20,
      unit: fc.constantFrom("a", "b", "-", "1", "'", "`", " "),
    }),
    { maxLength: 8 },
  ),
  fc.array(fc.oneof(plain, fc.integer()), { maxLength: 4 }),
  fc.object(),
);

Deno.test({
  name: "textFormatter() writes what LogTape's default text formatter writes",
  permissions: "none",
  fn() {
    fc.assert(
      fc.property(fc.array(value, { maxLength: 6 }), (values) => {
        const r = record(values);
        assert.equal(textFormatter(r), defaultTextFormatter(r));
      }),
      { numRuns: 5000 },
    );
  },
});

Deno.test({
  name: "textFormatter() writes a closed holder's line as LogTape would",
  permissions: "none",
  fn() {
    const names = [
      [],
      ["w3-1"],
      ["jobs", "it's", "a `b`"],
      Array.from({ length: 6 }, (_, i) => `name-${i}`),
      Array.from({ length: 7 }, (_, i) => `n${i}`),
      ["x".repeat(70)],
      ["x".repeat(54)],
      ["x".repeat(55)],
      ["x".repeat(56)],
      ["tab\there", 'quote"d', "back\\slash", "ünï"],
    ];
    for (const list of names) {
      const r = record([
        1,
        42,
        "127.0.0.1:5000",
        "no label",
        "peer_closed",
        list,
      ]);
      assert.equal(textFormatter(r), defaultTextFormatter(r));
    }
    const sparse = record([[, "a"]]);
    assert.equal(textFormatter(sparse), defaultTextFormatter(sparse));
  },
});

/** The records a real LogTape logger makes, caught by a sink. */
async function capturing(): Promise<LogRecord[]> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { catch: (record: LogRecord) => records.push(record) },
    loggers: [
      { category: [], lowestLevel: "trace", sinks: ["catch"] },
      { category: ["logtape", "meta"], lowestLevel: "fatal", sinks: [] },
    ],
  });
  return records;
}

const text = fc.oneof(
  plain,
  fc.constantFrom(
    "{",
    "}",
    "{{",
    "}}",
    "{ a }",
    "{a.b}",
    "\x1b[1m",
    "\t",
    "\n",
  ),
);
const key = fc.constantFrom("a", "b", "id", "0", "constructor", "missing");
const level = fc.constantFrom<LogLevel[]>(
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
);

Deno.test({
  name:
    "textFormatter() writes what LogTape's default formatter writes for records of a real logger",
  permissions: "none",
  async fn() {
    const records = await capturing();
    try {
      fc.assert(
        fc.property(
          level,
          fc.array(fc.constantFrom("pklock", "server", "a·b", "\x1b[2J")),
          fc.array(fc.tuple(text, key), { maxLength: 4 }),
          text,
          fc.dictionary(key, value),
          (level, category, pieces, tail, properties) => {
            const template = pieces.map(([t, k]) => `${t}{${k}}`).join("") +
              tail;
            records.length = 0;
            getLogger(category)[level](template, properties);
            const r = records[0]!;
            assert.equal(textFormatter(r), defaultTextFormatter(r));
          },
        ),
        { numRuns: 3000 },
      );
    } finally {
      await reset();
    }
  },
});

Deno.test({
  name: "textFormatter() writes timestamps as LogTape does, in every year",
  permissions: "none",
  fn() {
    const times = [
      Date.UTC(999, 11, 31, 23, 59, 59, 999),
      Date.UTC(1000, 0, 1),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
      Date.UTC(10_000, 0, 1),
      0,
      -1,
    ];
    for (const timestamp of times) {
      const r: LogRecord = {
        category: ["pklock"],
        level: "info",
        message: ["Plain"],
        rawMessage: "Plain",
        properties: {},
        timestamp,
      };
      assert.equal(
        textFormatter(r),
        defaultTextFormatter(r),
        String(timestamp),
      );
    }
  },
});
