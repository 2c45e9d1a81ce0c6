import assert from "node:assert/strict";
import fc from "fast-check";
import { jsonBytes } from "./json_bytes.ts";

const encoder = new TextEncoder();

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

test("jsonBytes() is the UTF-8 size of JSON.stringify, for any string", () => {
  const unit = fc.integer({ min: 0, max: 0xffff }).map((c) =>
    String.fromCharCode(c)
  );
  fc.assert(
    fc.property(fc.string({ unit }), (text) => {
      assert.equal(
        jsonBytes(text),
        encoder.encode(JSON.stringify(text)).length,
      );
    }),
    { numRuns: 5_000 },
  );
  assert.equal(jsonBytes('😀\ud800"\n\u0001é'), 4 + 6 + 2 + 2 + 6 + 2 + 2);
});
