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

/** How long a short bench may run before it is stopped and its output shown. */
const BENCH_LIMIT_MS = 100_000;

/**
 * Runs `deno task bench ARGS --no-write` and returns what it printed; one
 * that runs past {@linkcode BENCH_LIMIT_MS} is stopped and fails with what
 * it printed so far. It leads a process group of its own, since `deno task`
 * does not pass SIGTERM on: the whole group gets it (the bench then stops
 * its servers).
 */
async function bench(args: string[]): Promise<string> {
  const task = ["task", "bench", ...args, "--repeat", "1", "--no-write"];
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), ...task],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    Deno.kill(-child.pid, "SIGTERM");
  }, BENCH_LIMIT_MS);
  const [stdout, stderr, status] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.status,
  ]).finally(() => clearTimeout(timer));
  const text = stdout + stderr;
  assert.ok(!late, `bench still running after ${BENCH_LIMIT_MS} ms:\n${text}`);
  assert.equal(status.code, 0, text);
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
