import assert from "node:assert/strict";
import type { W1Result } from "./driver.ts";
import { render, type RunRecord, type Target } from "./report.ts";

function w1(target: Target, clients: number, rate: number): RunRecord {
  const result: W1Result = {
    workload: "w1",
    clients,
    pairs: rate * 4,
    seconds: 4,
    rate,
    latency: { count: rate * 4, mean: 1, p50: 1, p99: 2, max: 3 },
  };
  return {
    target,
    workload: "w1",
    param: clients,
    rep: 1,
    result,
    error: null,
    serverCpu: 0.9,
    driverCpu: 0.9,
    restCpu: 0,
    memory: null,
  };
}

Deno.test("the summary sets the floor's W1 rate against Redis and pklock", {
  permissions: "none",
}, () => {
  const text = render([
    w1("pklock", 64, 40_000),
    w1("redis", 64, 50_000),
    w1("floor", 64, 55_000),
  ], { targets: ["pklock", "redis", "floor"], clients: [64], holds: {} });
  assert.match(
    text,
    /in W1: C=64: 55,000 pairs\/s \(1\.10× Redis; pklock reaches 0\.73× of it\)\./,
  );
  assert.match(
    text,
    /\| W1 C=64 ≥ 1\.0× Redis +\| +40,000 vs 50,000 pairs\/s \(0\.80×\); Deno socket floor 55,000 \(1\.10× Redis\) \|/,
  );
  assert.match(
    text,
    /\| Deno socket floor \(canned replies, no locks\), C=64 \|/,
  );
});

Deno.test("without a floor run the report says nothing of it", {
  permissions: "none",
}, () => {
  const text = render([w1("pklock", 64, 40_000), w1("redis", 64, 50_000)], {
    targets: ["pklock", "redis"],
    clients: [64],
    holds: {},
  });
  assert.doesNotMatch(text, /floor/);
});
