import assert from "node:assert/strict";
import type {
  StatusEntry,
  StatusLock,
  StatusParameters,
  StatusResult,
} from "../protocol/lock_protocol.ts";
import { readStatus } from "./status_report.ts";

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, permissions: "none", fn });
}

function entry(connectionId: number): StatusEntry {
  return {
    connectionId,
    peer: "127.0.0.1:1",
    mode: "exclusive",
    since: "2026-12-01T00:00:00.000Z",
    elapsed: 1,
  };
}

function lock(
  name: string,
  holders: number[],
  waiters: number[],
  more = false,
): StatusLock {
  const made: StatusLock = {
    name,
    mode: "exclusive",
    holders: holders.map(entry),
    waiters: waiters.map(entry),
  };
  if (more) made.more = true;
  return made;
}

function page(locks: StatusLock[], next?: string): StatusResult {
  const made: StatusResult = {
    status: "ok",
    server: {
      version: "0.1.0",
      protocol: 1,
      startedAt: "2026-12-01T00:00:00.000Z",
      uptime: 1,
    },
    connections: { current: 1, total: 1 },
    locks,
  };
  if (next === undefined) {
    made.totals = { locks: 3, holders: 3, waiters: 4 };
  } else made.next = next;
  return made;
}

test("readStatus() follows next, joins a split lock and sorts by name", async () => {
  const pages = [
    page([lock("zeta", [1], []), lock("big", [2], [3], true)], "c1"),
    page([lock("big", [], [4, 5], true)], "c2"),
    page([], "c3"),
    page([lock("big", [], [6]), lock("alpha", [7], [])]),
  ];
  const asked: StatusParameters[] = [];
  const report = await readStatus((parameters) => {
    asked.push(parameters);
    return Promise.resolve(pages[asked.length - 1]!);
  }, { pattern: "*a", limit: 3 });
  assert.deepEqual(asked, [
    { pattern: "*a", limit: 3 },
    { cursor: "c1" },
    { cursor: "c2" },
    { cursor: "c3" },
  ]);
  assert.deepEqual(report.locks, [
    lock("alpha", [7], []),
    lock("big", [2], [3, 4, 5, 6]),
    lock("zeta", [1], []),
  ]);
  assert.deepEqual(report.totals, { locks: 3, holders: 3, waiters: 4 });
  assert.equal("next" in report, false);
});

test("readStatus() ends a split lock whose rest is gone from the next page", async () => {
  const pages = [
    page([lock("a", [1], [], true)], "c1"),
    page([lock("b", [2], [])]),
  ];
  let i = 0;
  const report = await readStatus(() => Promise.resolve(pages[i++]!));
  assert.deepEqual(report.locks, [lock("a", [1], []), lock("b", [2], [])]);
});
