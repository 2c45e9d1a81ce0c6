/**
 * `deno task bench` runs end to end: a short run against pklock and the Deno
 * socket floor, with W2's exclusion check and W3's mass disconnect, and one
 * against the cluster and v3lock on a throw-away etcd. It checks what the
 * bench found, never how fast (speed is the bench's own business).
 *
 * @module
 */

import assert from "node:assert/strict";
import { etcdTest } from "./etcd_cluster.ts";
import { ROOT } from "./helpers.ts";

/** Runs `deno task bench ARGS --no-write` and returns what it printed. */
async function bench(args: string[]): Promise<string> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "bench", ...args, "--repeat", "1", "--no-write"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) +
    new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, text);
  return text;
}

Deno.test("a short bench run drives pklock and the floor, and W2 sees no overlap", async () => {
  const text = await bench([
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
  ]);
  assert.match(text, /^pklock W1 C=2: \d+ pairs\/s/m);
  assert.match(text, /^pklock W2 C=2: \d+ grants\/s.* overlaps 0,/m);
  assert.match(text, /^\| pklock, C=2 \|.*\| 0 \/ [\d,]+, 0 token regr\. \|/m);
  assert.match(text, /^pklock W3 N=50: 50 granted/m);
  assert.match(text, /^floor W1 C=2: \d+ pairs\/s/m);
  assert.doesNotMatch(text, /^floor W[23]/m);
});

etcdTest(
  "a short cluster bench runs pklock nodes and v3lock on one etcd, with no violation",
  async () => {
    const text = await bench([
      "--targets",
      "cluster,v3lock",
      "--cluster-clients",
      "2",
      "--cluster-contenders",
      "3",
      "--cluster-nodes",
      "2",
      "--cluster-locks",
      "20",
      "--verify-every",
      "2",
      "--duration",
      "0.5",
      "--warmup",
      "0.2",
    ]);
    assert.match(text, /^cluster W1 C=2: \d+ pairs\/s/m);
    assert.match(text, /^v3lock W1 C=2: \d+ pairs\/s/m);
    assert.match(
      text,
      /^cluster W2 C=3: \d+ grants\/s.* hand-off p50 [\d.]+ ms.* overlaps 0, token regressions 0,/m,
    );
    assert.match(
      text,
      /^v3lock W2 C=3: \d+ grants\/s.* overlaps 0, token regressions 0,/m,
    );
    assert.match(
      text,
      /^cluster DROP L=20: .* 20 re-granted after the drop, .* overlaps 0, token regressions 0$/m,
    );
    assert.match(text, /^v3lock DROP L=20: .* 20 re-granted after the drop,/m);
    assert.match(
      text,
      /^\| violations: overlaps \/ token regressions \| 0 \/ 0 in 2 runs \|/m,
    );
  },
);
