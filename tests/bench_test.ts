/**
 * `deno task bench` runs end to end: a short run against pklock and the Deno
 * socket floor, with W2's exclusion check and W3's mass disconnect. It checks
 * what the bench found, never how fast (speed is the bench's own business).
 *
 * @module
 */

import assert from "node:assert/strict";
import { ROOT } from "./helpers.ts";

Deno.test("a short bench run drives pklock and the floor, and W2 sees no overlap", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "task",
      "bench",
      "--targets",
      "pklock,floor",
      "--clients",
      "2",
      "--hold",
      "50",
      "--duration",
      "0.3",
      "--warmup",
      "0.1",
      "--repeat",
      "1",
      "--no-write",
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) +
    new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, text);
  assert.match(text, /^pklock W1 C=2: \d+ pairs\/s/m);
  assert.match(text, /^pklock W2 C=2: \d+ grants\/s.* overlaps 0,/m);
  assert.match(text, /^\| pklock, C=2 \|.*\| 0 \/ [\d,]+, 0 token regr\. \|/m);
  assert.match(text, /^pklock W3 N=50: 50 granted/m);
  assert.match(text, /^floor W1 C=2: \d+ pairs\/s/m);
  assert.doesNotMatch(text, /^floor W[23]/m);
});
