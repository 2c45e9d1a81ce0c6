import assert from "node:assert/strict";
import {
  configure,
  defaultTextFormatter,
  getLogger,
  type LogRecord,
  reset,
} from "@logtape/logtape";
import { textFormatter } from "./log.ts";

/** Logs through LogTape itself and returns the records its sink received. */
async function records(
  log: (logger: ReturnType<typeof getLogger>) => void,
): Promise<LogRecord[]> {
  const captured: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { capture: (record: LogRecord) => captured.push(record) },
    loggers: [
      { category: ["test"], lowestLevel: "trace", sinks: ["capture"] },
      { category: ["logtape", "meta"], lowestLevel: "fatal", sinks: [] },
    ],
  });
  try {
    log(getLogger(["test", "log"]));
  } finally {
    await reset();
  }
  return captured;
}

const values: unknown[] = [
  "jobs",
  "",
  "127.0.0.1:4000",
  "with space and {braces}",
  'with "quotes"',
  "it's",
  "back\\slash",
  "new\nline",
  "tab\t",
  "\x1b[31mred",
  "\u009bcsi",
  "é€😀",
  "x".repeat(300),
  0,
  -0,
  42,
  -7,
  2 ** 53,
  1.5,
  NaN,
  Infinity,
  10n,
  true,
  null,
  undefined,
  { a: 1, s: "x".repeat(200) },
  Array.from({ length: 200 }, (_, i) => i),
];

Deno.test("the text log format renders every value as LogTape's default formatter does", async () => {
  const logged = await records((logger) => {
    for (const value of values) {
      logger.info("Released {name} (token {token}) from {peer}", {
        name: value,
        token: value,
        peer: value,
      });
    }
  });
  assert.equal(logged.length, values.length);
  for (const [i, record] of logged.entries()) {
    assert.equal(
      textFormatter(record),
      defaultTextFormatter(record),
      String(values[i]),
    );
  }
});

Deno.test("the text log format equals LogTape's for every level and for templates it parses specially", async () => {
  const logged = await records((logger) => {
    logger.trace("plain text");
    logger.debug("{a}{b}", { a: 1, b: "x" });
    logger.warn("missing {nothing} here", {});
    logger.error("escaped {{braces}} and {a}", { a: 1 });
    logger.fatal("nested {a.b} and { a }", { a: { b: 2 } });
    logger.info("control \x1b[2J in the template {a}", { a: 1 });
    logger.info("{*}", { a: 1 });
    logger.info`tagged ${"template"}`;
    logger.info("unclosed {a", { a: 1 });
  });
  assert.equal(logged.length, 9);
  for (const record of logged) {
    assert.equal(
      textFormatter(record),
      defaultTextFormatter(record),
      String(record.rawMessage),
    );
  }
});
