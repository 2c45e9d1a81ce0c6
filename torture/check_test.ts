// The torture checker on hand-made logs: a checker that cannot fail is
// worthless, so every rule is shown catching the fault it is for, next to the
// same log without the fault passing. A property test then runs the checker
// over random histories of a correct lock service, kills and restarts
// included, and expects no violation.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkLog,
  formatLog,
  LogChecker,
  type LogRecord,
  type ViolationKind,
} from "./check.ts";

const A = 101;
const B = 102;
const C = 103;

function kinds(records: LogRecord[]): ViolationKind[] {
  return checkLog(formatLog(records)).violations.map((v) => v.kind);
}

/** A whole hold by `pid`, from ask to end. */
function hold(pid: number, token: number, gen = 1): LogRecord[] {
  return [
    { event: "ask", pid, gen },
    { event: "start", pid, gen, token },
    { event: "work", pid, gen, token },
    { event: "end", pid, gen, token },
  ];
}

Deno.test("a clean log passes and is counted", { permissions: "none" }, () => {
  const { stats, violations } = checkLog(formatLog([
    { event: "server_start", gen: 1, port: 4000, pid: 1 },
    { event: "spawn", pid: A, gen: 1 },
    { event: "spawn", pid: B, gen: 1 },
    ...hold(A, 1),
    { event: "ask", pid: B, gen: 1, wait: 0 },
    { event: "refused", pid: B, gen: 1, reason: "busy" },
    ...hold(B, 2),
    { event: "shutdown" },
    { event: "exit", pid: A, code: 0 },
    { event: "exit", pid: B, code: 0 },
  ]));
  assert.deepEqual(violations, []);
  assert.equal(stats.asks, 3);
  assert.equal(stats.grants, 2);
  assert.equal(stats.refusals, 1);
  assert.deepEqual(stats.refusalReasons, { busy: 1 });
  assert.equal(stats.maxToken, 2);
});

Deno.test("a start while another holder has not ended is an overlap", {
  permissions: "none",
}, () => {
  const log: LogRecord[] = [
    { event: "ask", pid: A, gen: 1 },
    { event: "ask", pid: B, gen: 1 },
    { event: "start", pid: A, gen: 1, token: 1 },
    { event: "start", pid: B, gen: 1, token: 2 },
    { event: "end", pid: A, gen: 1, token: 1 },
    { event: "end", pid: B, gen: 1, token: 2 },
  ];
  const { violations } = checkLog(formatLog(log));
  assert.deepEqual(violations.map((v) => [v.kind, v.line]), [
    ["overlap", 4],
    // A's end comes after B's start: a fenced resource would refuse it.
    ["stale_write", 5],
  ]);
  assert.match(violations[0]!.message, /pid 102 .* while pid 101 held token 1/);
  // A hold that never ends is reported once, not at every later start.
  assert.deepEqual(
    kinds([
      { event: "ask", pid: A, gen: 1 },
      { event: "start", pid: A, gen: 1, token: 1 },
      ...hold(B, 2),
      ...hold(C, 3),
    ]),
    ["overlap"],
  );
  // The same holds one after the other pass.
  assert.deepEqual(kinds([...hold(A, 1), ...hold(B, 2)]), []);
});

Deno.test("tokens that do not strictly increase in hold order are caught", {
  permissions: "none",
}, () => {
  assert.deepEqual(kinds([...hold(A, 5), ...hold(B, 5)]), ["token_order"]);
  // B's own writes then carry a token below one already started.
  assert.deepEqual(kinds([...hold(A, 7), ...hold(B, 6)]), [
    "token_order",
    "stale_write",
    "stale_write",
  ]);
  // Gaps are fine: a restarted server resumes above its reservation.
  assert.deepEqual(kinds([...hold(A, 7), ...hold(B, 10_001)]), []);
});

Deno.test(
  "an ask without an outcome is caught",
  { permissions: "none" },
  () => {
    // The log ends with the ask open.
    const ended = checkLog(
      formatLog([...hold(A, 1), { event: "ask", pid: B, gen: 1 }]),
    );
    assert.deepEqual(ended.violations.map((v) => [v.kind, v.line]), [
      ["unanswered", 5],
    ]);
    // The worker exits without answering.
    assert.deepEqual(
      kinds([{ event: "ask", pid: A, gen: 1 }, {
        event: "exit",
        pid: A,
        code: 0,
      }]),
      ["unanswered"],
    );
    // The worker asks again without an outcome of its first ask.
    assert.deepEqual(
      kinds([
        { event: "ask", pid: A, gen: 1 },
        { event: "ask", pid: A, gen: 1 },
        { event: "refused", pid: A, gen: 1, reason: "timeout" },
      ]),
      ["unanswered"],
    );
    // Still waiting when the run ended, so the driver killed it.
    assert.deepEqual(
      kinds([
        { event: "ask", pid: A, gen: 1 },
        { event: "kill", pid: A, reason: "straggler", stopped: true },
      ]),
      ["unanswered"],
    );
  },
);

Deno.test("an ask is excused when its worker was killed or lost its server", {
  permissions: "none",
}, () => {
  const { stats, violations } = checkLog(formatLog([
    { event: "ask", pid: A, gen: 1 },
    { event: "start", pid: A, gen: 1, token: 1 },
    { event: "ask", pid: B, gen: 1 },
    { event: "ask", pid: C, gen: 1 },
    { event: "kill", pid: B, reason: "chaos", stopped: true },
    { event: "exit", pid: B, code: 137 },
    { event: "server_kill", gen: 1 },
    { event: "lost", pid: A, gen: 1, token: 1 },
    { event: "disconnected", pid: C, gen: 1 },
    { event: "exit", pid: A, code: 4 },
    { event: "exit", pid: C, code: 4 },
  ]));
  assert.deepEqual(violations, []);
  assert.equal(stats.waiterKills, 1);
  assert.equal(stats.lost, 1);
  assert.equal(stats.disconnected, 1);
});

Deno.test("a killed holder's hold ends at its kill line, not before", {
  permissions: "none",
}, () => {
  const killed: LogRecord[] = [
    { event: "ask", pid: A, gen: 1 },
    { event: "start", pid: A, gen: 1, token: 1 },
    { event: "ask", pid: B, gen: 1 },
    { event: "kill", pid: A, reason: "chaos", stopped: true },
    { event: "start", pid: B, gen: 1, token: 2 },
  ];
  const { stats, violations } = checkLog(formatLog(killed));
  assert.deepEqual(violations, []);
  assert.equal(stats.holderKills, 1);
  // The next holder started before the kill: an overlap.
  assert.deepEqual(kinds([...killed.slice(0, 3), killed[4]!, killed[3]!]), [
    "overlap",
  ]);
});

Deno.test("a killed worker that writes again breaks the harness's promise", {
  permissions: "none",
}, () => {
  assert.deepEqual(
    kinds([
      { event: "ask", pid: A, gen: 1 },
      { event: "kill", pid: A, reason: "chaos", stopped: false },
      { event: "start", pid: A, gen: 1, token: 1 },
    ]),
    ["sequence", "sequence"],
  );
});

Deno.test(
  "a holder of a killed server may finish, but not after a newer token",
  { permissions: "none" },
  () => {
    const before: LogRecord[] = [
      { event: "ask", pid: A, gen: 1 },
      { event: "start", pid: A, gen: 1, token: 3 },
      { event: "server_kill", gen: 1 },
      // Not yet aware of it: no one else holds, so no harm.
      { event: "work", pid: A, gen: 1, token: 3 },
    ];
    const later: LogRecord[] = [
      { event: "ask", pid: B, gen: 2 },
      { event: "start", pid: B, gen: 2, token: 10_001 },
    ];
    // A's hold ended with its server: B's start is no overlap.
    assert.deepEqual(
      kinds([...before, ...later, { event: "lost", pid: A, gen: 1, token: 3 }]),
      [],
    );
    // A writes with token 3 after token 10001 started: a stale write.
    assert.deepEqual(
      kinds([...before, ...later, { event: "end", pid: A, gen: 1, token: 3 }]),
      ["stale_write"],
    );
    // A grant of the dead server that arrives after a newer one.
    assert.deepEqual(
      kinds([
        { event: "ask", pid: A, gen: 1 },
        { event: "server_kill", gen: 1 },
        ...later,
        { event: "start", pid: A, gen: 1, token: 4 },
        { event: "lost", pid: A, gen: 1, token: 4 },
      ]),
      ["token_order"],
    );
  },
);

Deno.test("writes for a hold the worker does not have are caught", {
  permissions: "none",
}, () => {
  assert.deepEqual(
    kinds([...hold(A, 1), { event: "work", pid: A, gen: 1, token: 1 }]),
    ["write_outside_hold"],
  );
  assert.deepEqual(
    kinds([
      { event: "ask", pid: A, gen: 1 },
      { event: "start", pid: A, gen: 1, token: 1 },
      { event: "end", pid: A, gen: 1, token: 2 },
    ]),
    ["write_outside_hold"],
  );
});

Deno.test(
  "a spawn logged after the worker's own lines is the harness's fault, not a write outside its hold",
  { permissions: "none" },
  () => {
    const [ask, start, work, end] = hold(A, 1);
    const spawn: LogRecord = { event: "spawn", pid: A, gen: 1 };
    assert.deepEqual(kinds([spawn, ask!, start!, work!, end!]), []);
    const late = checkLog(formatLog([ask!, start!, spawn, work!, end!]));
    assert.deepEqual(late.violations.map((v) => [v.kind, v.line]), [
      ["sequence", 3],
    ]);
    assert.equal(late.stats.grants, 1);
    // A new process with the pid of one that exited starts afresh.
    assert.deepEqual(
      kinds([
        spawn,
        ask!,
        start!,
        { event: "exit", pid: A, code: 137 },
        spawn,
        ...hold(A, 2),
      ]),
      [],
    );
  },
);

Deno.test(
  "a torn or garbled line is malformed",
  { permissions: "none" },
  () => {
    const text = formatLog(hold(A, 1)) + '{"event":"sta\n' +
      '{"event":"start","pid":"x","gen":1,"token":1}\n';
    assert.deepEqual(
      checkLog(text).violations.map((v) => [v.kind, v.line]),
      [["malformed", 5], ["malformed", 6]],
    );
  },
);

Deno.test(
  "LogChecker.hold follows the open hold",
  { permissions: "none" },
  () => {
    const checker = new LogChecker();
    const push = (record: LogRecord) =>
      checker.pushLine(JSON.stringify(record));
    assert.equal(checker.hold, undefined);
    push({ event: "ask", pid: A, gen: 1 });
    push({ event: "start", pid: A, gen: 1, token: 1, long: true });
    assert.deepEqual(checker.hold, { pid: A, token: 1, long: true });
    push({ event: "server_kill", gen: 1 });
    assert.equal(checker.hold, undefined);
  },
);

/**
 * A random history of a correct lock service: workers ask (unbounded, try or
 * bounded), a FIFO queue grants, holders work and end; the driver kills
 * workers and restarts the server. Each choice picks among the steps possible
 * at that moment.
 */
function correctHistory(choices: number[]): LogRecord[] {
  const log: LogRecord[] = [];
  let gen = 1;
  let nextToken = 1;
  let nextPid = 1000;
  type Phase = "idle" | "waiting" | "holding";
  const workers = new Map<number, { gen: number; phase: Phase }>();
  let holder: number | undefined;
  let holderToken = 0;
  const queue: number[] = [];
  const spawn = () => {
    const pid = nextPid++;
    workers.set(pid, { gen, phase: "idle" });
    log.push({ event: "spawn", pid, gen });
  };
  const grantNext = () => {
    const pid = queue.shift();
    if (pid === undefined) return;
    holder = pid;
    holderToken = nextToken++;
    workers.get(pid)!.phase = "holding";
    log.push({ event: "start", pid, gen, token: holderToken });
  };
  log.push({ event: "server_start", gen, port: 1, pid: 1 });
  for (let i = 0; i < 3; i++) spawn();
  for (const choice of choices) {
    const pids = [...workers.keys()];
    const pid = pids[choice % pids.length]!;
    const worker = workers.get(pid)!;
    const action = Math.floor(choice / pids.length) % 6;
    if (action === 4) {
      log.push({ event: "kill", pid, reason: "chaos", stopped: true });
      log.push({ event: "exit", pid, code: 137 });
      workers.delete(pid);
      if (queue.includes(pid)) queue.splice(queue.indexOf(pid), 1);
      if (holder === pid) {
        holder = undefined;
        grantNext();
      }
      spawn();
    } else if (action === 5 && choice % 7 === 0) {
      log.push({ event: "server_kill", gen });
      for (const [each, state] of workers) {
        if (state.phase === "holding") {
          // It may still write before it notices.
          log.push({ event: "work", pid: each, gen, token: holderToken });
          log.push({ event: "lost", pid: each, gen, token: holderToken });
        } else if (state.phase === "waiting" || choice % 2 === 0) {
          log.push({ event: "disconnected", pid: each, gen });
        }
        log.push({ event: "exit", pid: each, code: 4 });
      }
      workers.clear();
      queue.length = 0;
      holder = undefined;
      gen++;
      nextToken = (gen - 1) * 10_000 + 1;
      log.push({ event: "server_start", gen, port: gen, pid: gen });
      for (let i = 0; i < 3; i++) spawn();
    } else if (worker.phase === "idle") {
      const wait = action % 3 === 0 ? 0 : undefined;
      log.push(
        wait === 0
          ? { event: "ask", pid, gen, wait }
          : { event: "ask", pid, gen },
      );
      if (holder === undefined) {
        queue.push(pid);
        grantNext();
      } else if (wait === 0) {
        log.push({ event: "refused", pid, gen, reason: "busy" });
      } else {
        queue.push(pid);
        worker.phase = "waiting";
      }
    } else if (worker.phase === "waiting" && action === 1) {
      queue.splice(queue.indexOf(pid), 1);
      worker.phase = "idle";
      log.push({ event: "refused", pid, gen, reason: "timeout" });
    } else if (worker.phase === "holding") {
      if (action % 2 === 0) {
        log.push({ event: "work", pid, gen, token: holderToken });
      } else {
        log.push({ event: "end", pid, gen, token: holderToken });
        worker.phase = "idle";
        holder = undefined;
        grantNext();
      }
    }
  }
  log.push({ event: "shutdown" });
  // Waiters drain: each is granted in turn and ends.
  while (holder !== undefined) {
    const pid = holder;
    log.push({ event: "end", pid, gen, token: holderToken });
    workers.get(pid)!.phase = "idle";
    holder = undefined;
    grantNext();
  }
  for (const pid of workers.keys()) log.push({ event: "exit", pid, code: 0 });
  return log;
}

Deno.test("random histories of a correct service pass; one moved start fails", {
  permissions: "none",
}, () => {
  fc.assert(
    fc.property(fc.array(fc.nat(1000), { maxLength: 300 }), (choices) => {
      const log = correctHistory(choices);
      const { stats, violations } = checkLog(formatLog(log));
      assert.deepEqual(violations, [], formatLog(log));
      // Moving a start before the end of the hold it followed must be caught.
      const index = log.findIndex((record, i) =>
        record.event === "start" && i > 0 && log[i - 1]!.event === "end" &&
        (log[i - 1] as { pid: number }).pid !== record.pid
      );
      if (index !== -1) {
        const moved = [...log];
        [moved[index - 1], moved[index]] = [moved[index]!, moved[index - 1]!];
        assert.ok(kinds(moved).includes("overlap"), formatLog(moved));
      }
      return stats.grants >= 0;
    }),
    { numRuns: 300 },
  );
});
