import assert from "node:assert/strict";
import {
  GuessPenalty,
  MAX_TRACKED_PEERS,
  WarningThrottle,
} from "./peer_penalties.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

test("a throttle lets one warning per peer through per interval, and the next says how many it left out", () => {
  let now = 0;
  const throttle = new WarningThrottle({ intervalMs: 1000, now: () => now });
  assert.equal(throttle.admit("10.0.0.1"), 0);
  assert.equal(throttle.admit("10.0.0.2"), 0);
  for (let i = 0; i < 5; i++) assert.equal(throttle.admit("10.0.0.1"), null);
  now = 999;
  assert.equal(throttle.admit("10.0.0.1"), null);
  now = 1000;
  assert.equal(throttle.admit("10.0.0.1"), 6);
  assert.equal(throttle.admit("10.0.0.2"), 0);
  assert.equal(throttle.admit("10.0.0.1"), null);
});

test("a throttle tracks a bounded number of peers; the rest share one entry", () => {
  let now = 0;
  const throttle = new WarningThrottle({ intervalMs: 1000, now: () => now });
  for (let i = 0; i < MAX_TRACKED_PEERS; i++) {
    assert.equal(throttle.admit(`peer-${i}`), 0);
  }
  assert.equal(throttle.admit("late-1"), 0);
  assert.equal(throttle.admit("late-2"), null);
  // Once the others' entries expire, a new peer has its own again.
  now = 1000;
  assert.equal(throttle.admit("late-3"), 0);
  assert.equal(throttle.admit("late-3"), null);
  assert.equal(throttle.admit("late-4"), 0);
});

test("a guess penalty doubles with each failure in a row, up to its bound, and is forgotten after a success", () => {
  let now = 0;
  const penalty = new GuessPenalty({
    baseMs: 100,
    maxMs: 1000,
    now: () => now,
  });
  assert.equal(penalty.remaining("a"), 0);
  const served: number[] = [];
  for (let i = 0; i < 6; i++) {
    served.push(penalty.failed("a"));
    assert.equal(penalty.remaining("a"), served.at(-1));
    assert.equal(penalty.remaining("b"), 0);
    now += served.at(-1)!;
    assert.equal(penalty.remaining("a"), 0);
  }
  assert.deepEqual(served, [100, 200, 400, 800, 1000, 1000]);
  penalty.succeeded("a");
  assert.equal(penalty.failed("a"), 100);
  // Quiet for the longest penalty past its end: a fresh start.
  now += 100 + 1000;
  assert.equal(penalty.failed("a"), 100);
});
