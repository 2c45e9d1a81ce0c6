import assert from "node:assert/strict";
import type { DropResult } from "./drop.ts";
import type { W1Result, W2Result } from "./driver.ts";
import { medianDrop, renderCluster, violations } from "./cluster_report.ts";
import type { RunRecord } from "./report.ts";

function record(
  target: "cluster" | "v3lock",
  result: W1Result | W2Result | DropResult,
  rep = 1,
): RunRecord {
  return {
    target,
    workload: result.workload,
    param: result.workload === "drop" ? result.locks : result.clients,
    rep,
    result,
    error: null,
    serverCpu: 1,
    driverCpu: 0.5,
    restCpu: 0,
    memory: null,
  };
}

const summary = (p50: number, p99: number) => ({
  count: 100,
  mean: p50,
  p50,
  p99,
  max: p99,
});

function w1(rate: number): W1Result {
  return {
    workload: "w1",
    clients: 32,
    pairs: rate * 4,
    seconds: 4,
    rate,
    latency: summary(30, 60),
  };
}

function w2(
  rate: number,
  handOffP99: number,
  overlaps = 0,
  tokenRegressions = 0,
): W2Result {
  return {
    workload: "w2",
    clients: 8,
    grants: rate * 4,
    seconds: 4,
    rate,
    wait: summary(40, 90),
    handOff: summary(5, handOffP99),
    perClient: [1, 1],
    jain: 1,
    verifiedHolds: 10,
    overlaps,
    tokenRegressions,
    retries: null,
  };
}

function drop(lastMs: number, granted = 1000, overlaps = 0): DropResult {
  return {
    workload: "drop",
    locks: 1000,
    holdMs: 900,
    queueMs: 1000,
    firstMs: 10,
    lastMs,
    granted,
    overlaps,
    tokenRegressions: 0,
  };
}

const options = { clients: [32], contenders: [8], locks: 1000 };

Deno.test(
  "the cluster table sets each row against v3lock and checks the targets",
  {
    permissions: "none",
  },
  () => {
    const text = renderCluster([
      record("cluster", w1(1_100)),
      record("v3lock", w1(1_000)),
      record("cluster", w2(170, 20)),
      record("v3lock", w2(80, 80)),
      record("cluster", drop(150)),
      record("v3lock", drop(700)),
    ], options);
    assert.match(
      text,
      /\| uncontended C=32 pairs\/s \| 1,100 \| 1,000 \| 1\.10× \| ≥ 1\.0× \| \*\*met\*\* \|/,
    );
    assert.match(
      text,
      /\| contended C=8 grants\/s \| 170 \| 80 \| 2\.13× \| ≥ 2\.0× \| \*\*met\*\* \|/,
    );
    assert.match(
      text,
      /\| contended C=8 hand-off p99 ms \(lower is better\) \| 20\.0 \| 80\.0 \| 0\.25× \| ≤ 0\.50× \| \*\*met\*\* \|/,
    );
    assert.match(
      text,
      /\| disconnect: 1,000 locks re-granted on another node, ms \| 150 \| 700 \| 0\.21× \| ≤ 200 ms \| \*\*met\*\* \|/,
    );
    assert.match(
      text,
      /\| violations: overlaps \/ token regressions \| 0 \/ 0 in 2 runs \| 0 \/ 0 in 2 runs \| — \| 0 \| \*\*met\*\* \|/,
    );
  },
);

Deno.test("a target missed, and a drop not fully re-granted, say so", {
  permissions: "none",
}, () => {
  const text = renderCluster([
    record("cluster", w1(700)),
    record("v3lock", w1(1_000)),
    record("cluster", drop(5_000)),
    record("v3lock", drop(700, 590)),
  ], options);
  assert.match(
    text,
    /\| uncontended C=32 pairs\/s \| 700 \| 1,000 \| 0\.70× \| ≥ 1\.0× \| \*\*missed\*\* \|/,
  );
  assert.match(
    text,
    /\| disconnect: [^|]+ \| 5,000 \| 590 of 1,000 \| — \| ≤ 200 ms \| \*\*missed\*\* \|/,
  );
  assert.match(
    text,
    /\| contended C=8 grants\/s \| — \| — \| — \| ≥ 2\.0× \| not measured \|/,
  );
});

Deno.test("violations add up every contended and drop run of one target", {
  permissions: "none",
}, () => {
  const records = [
    record("cluster", w2(170, 20, 1, 2)),
    record("cluster", w2(170, 20, 0, 1), 2),
    record("cluster", drop(100, 999, 1)),
    record("cluster", w1(1_000)),
    record("v3lock", w2(80, 80, 5, 5)),
  ];
  assert.deepEqual(violations(records, "cluster"), {
    overlaps: 2,
    tokenRegressions: 3,
    runs: 3,
  });
  const text = renderCluster(records, options);
  assert.match(
    text,
    /\| violations: [^|]+ \| 2 \/ 3 in 3 runs \| 5 \/ 5 in 1 runs \| — \| 0 \| \*\*missed\*\* \|/,
  );
});

Deno.test(
  "the median drop counts a failed run, and one that did not re-grant everything, as the slowest",
  {
    permissions: "none",
  },
  () => {
    const records = [
      record("cluster", drop(300), 1),
      record("cluster", drop(100, 10), 2),
      record("cluster", drop(200), 3),
    ];
    assert.equal(medianDrop(records, "cluster", 1000)?.lastMs, 300);
    assert.equal(medianDrop(records.slice(0, 2), "cluster", 1000)?.lastMs, 300);
    assert.equal(medianDrop(records, "v3lock", 1000), undefined);
    const failed = { ...record("cluster", drop(1)), result: null, error: "x" };
    assert.equal(
      medianDrop([failed, failed, records[2]!], "cluster", 1000),
      null,
    );
    assert.equal(
      medianDrop([failed, records[0]!, records[2]!], "cluster", 1000)?.lastMs,
      300,
    );
    const text = renderCluster([failed, failed, records[2]!], options);
    assert.match(
      text,
      /\| disconnect: [^|]+ \| failed \| — \| — \| ≤ 200 ms \| \*\*missed\*\* \|/,
    );
  },
);
