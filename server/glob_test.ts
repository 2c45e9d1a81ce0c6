import assert from "node:assert/strict";
import fc from "fast-check";
import { globMatcher, globToRegExp } from "./glob.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

test("globMatcher() matches exactly what globToRegExp() matches", () => {
  const text = (chars: string[]) =>
    fc.array(fc.constantFrom(...chars), { maxLength: 12 })
      .map((units) => units.join(""));
  fc.assert(
    fc.property(
      text(["a", "b", "*", "?", ".", "\n"]),
      text(["a", "b", ".", "\n", "?", "*"]),
      (pattern, name) => {
        assert.equal(
          globMatcher(pattern)(name),
          globToRegExp(pattern).test(name),
          `${JSON.stringify(pattern)} on ${JSON.stringify(name)}`,
        );
      },
    ),
    { numRuns: 20_000 },
  );
});

test("globMatcher() stays fast on a pattern built to backtrack", () => {
  const pattern = "*a".repeat(500) + "*b*";
  const name = "a".repeat(65_536);
  const start = performance.now();
  assert.equal(globMatcher(pattern)(name), false);
  // A backtracking regular expression takes longer than the universe has.
  assert.ok(performance.now() - start < 1000);
});
