import assert from "node:assert/strict";
import fc from "fast-check";
import { defaultTextFormatter, type LogRecord } from "@logtape/logtape";
import { textFormatter } from "./log_format.ts";

/** An info record whose message interpolates `values` as `{0}`, `{1}`... */
function record(values: unknown[]): LogRecord {
  const message: unknown[] = ["Values"];
  const properties: Record<string, unknown> = {};
  values.forEach((value, i) => {
    message.push(value, i === values.length - 1 ? "." : ", ");
    properties[String(i)] = value;
  });
  return {
    category: ["pklock", "server"],
    level: "info",
    message,
    rawMessage: "Values " + values.map((_, i) => `{${i}}`).join(", ") + ".",
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
