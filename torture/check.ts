/**
 * The torture test's checker: a pure function over the shared log that the
 * workers and the driver append to. It knows nothing of processes or sockets;
 * the order of lines in the file is its only clock.
 *
 * Why the file order can be trusted:
 *
 * - A worker appends `end` before it sends `release`, and the next holder
 *   appends `start` after its grant arrives, so a release and the grant it
 *   allows are ordered in the file.
 * - The driver writes `spawn` for a worker before it closes the worker's
 *   standard input, and the worker writes nothing before that input ends,
 *   so a worker's `spawn` line precedes all of its own.
 * - Before the driver writes `kill` for a worker it stops the worker with
 *   SIGSTOP and waits until every thread has stopped; only then does it send
 *   SIGKILL. The worker writes nothing after its `kill` line, and the server
 *   cannot release its lock before that line, since the connection is still
 *   open while the worker is stopped.
 * - The driver stops the server the same way before it writes `server_kill`:
 *   no grant is decided by that server after the line. A worker of that
 *   server may still write `start`, `work` or `end` after it (a grant already
 *   on the wire, or a holder that has not yet read the end of its
 *   connection), but its hold ended with the server.
 *
 * What it checks:
 *
 * - **overlap**: a `start` while another exclusive hold is open. A hold opens
 *   at `start` and closes at its `end`, `lost` or `disconnected`, at the
 *   holder's `kill` or `exit`, or at the `server_kill` of the server that
 *   granted it. A hold that never ends is reported once, at the first start
 *   that overlaps it, not at every later one.
 * - **token_order**: each `start` carries a fencing token above that of every
 *   earlier `start`, across server restarts.
 * - **stale_write**: a `work` or `end` line carries a token below the highest
 *   token started before it: a fenced resource would have refused it.
 * - **write_outside_hold**: a `work`, `end` or `lost` line of a hold the
 *   worker does not have.
 * - **unanswered**: an `ask` that got neither `start` nor `refused` from the
 *   same worker. Excused only when the worker was killed by the driver's
 *   chaos, or lost its connection (`disconnected`); a worker killed because it
 *   did not finish at shutdown (`straggler`) is not excused.
 * - **sequence**: lines a correct worker never writes (a `start` without an
 *   `ask`, a line after the worker's `kill`), or a `spawn` after the lines of
 *   the worker it starts: the harness itself is wrong.
 * - **malformed**: a line that is not a record, such as a torn append.
 *
 * @module
 */

/** A line a worker appends. */
export type WorkerRecord =
  | { event: "ask"; pid: number; gen: number; wait?: number }
  | { event: "start"; pid: number; gen: number; token: number; long?: boolean }
  | {
    event: "work" | "end" | "lost";
    pid: number;
    gen: number;
    token: number;
  }
  | { event: "refused"; pid: number; gen: number; reason: string }
  | { event: "disconnected"; pid: number; gen: number; detail?: string };

/** A line the driver appends. */
export type DriverRecord =
  | { event: "server_start"; gen: number; port: number; pid: number }
  | { event: "server_kill"; gen: number; stopped?: boolean }
  | { event: "spawn"; pid: number; gen: number }
  | {
    event: "kill";
    pid: number;
    reason: "chaos" | "straggler";
    stopped: boolean;
  }
  | { event: "exit"; pid: number; code: number }
  | { event: "shutdown" };

/** One line of the log; `t` (ms since the epoch) is for people only. */
export type LogRecord = (WorkerRecord | DriverRecord) & { t?: number };

/** What kind of rule a line breaks. */
export type ViolationKind =
  | "overlap"
  | "token_order"
  | "stale_write"
  | "write_outside_hold"
  | "unanswered"
  | "sequence"
  | "malformed";

/** A broken rule, at a line of the log (1-based). */
export interface Violation {
  kind: ViolationKind;
  line: number;
  message: string;
}

/** The counts of a checked log. */
export interface CheckStats {
  /** `ask` lines. */
  asks: number;
  /** `start` lines: exclusive holds granted. */
  grants: number;
  /** `refused` lines, and how many of each reason. */
  refusals: number;
  refusalReasons: Record<string, number>;
  /** Workers killed by the driver's chaos, and what they were doing. */
  kills: number;
  holderKills: number;
  waiterKills: number;
  /** Workers killed because they had not finished when asked to stop. */
  stragglers: number;
  /** `server_kill` lines. */
  serverKills: number;
  /** Holds that ended with the connection (`lost`). */
  lost: number;
  /** Workers that lost their connection while not holding. */
  disconnected: number;
  /** The highest fencing token started. */
  maxToken: number;
}

/** The outcome of {@linkcode checkLog}. */
export interface CheckResult {
  stats: CheckStats;
  violations: Violation[];
}

interface Hold {
  token: number;
  gen: number;
  line: number;
  /** False once the server that granted it is gone. */
  open: boolean;
  /** The worker meant to hold it for long (tens of milliseconds). */
  long: boolean;
  /** An overlap with it was reported: one report per hold, not per start. */
  overlapped: boolean;
}

/**
 * Checks a log line by line; {@linkcode LogChecker.finish} reports. The
 * driver feeds it as the log grows, to know who holds the lock now.
 */
export class LogChecker {
  readonly #violations: Violation[] = [];
  readonly #stats: CheckStats = {
    asks: 0,
    grants: 0,
    refusals: 0,
    refusalReasons: {},
    kills: 0,
    holderKills: 0,
    waiterKills: 0,
    stragglers: 0,
    serverKills: 0,
    lost: 0,
    disconnected: 0,
    maxToken: 0,
  };
  /** Each worker's hold, open or ended by its server's death. */
  readonly #holds = new Map<number, Hold>();
  /** Each worker's `ask` awaiting an outcome: its line. */
  readonly #pending = new Map<number, number>();
  /** Workers killed or exited: they write nothing more. */
  readonly #gone = new Map<number, string>();
  /** Workers that wrote a line since their pid's last `spawn`. */
  readonly #wrote = new Set<number>();
  readonly #deadServers = new Set<number>();
  #line = 0;

  /** The hold open as far as the log shows, if any. */
  get hold(): { pid: number; token: number; long: boolean } | undefined {
    for (const [pid, hold] of this.#holds) {
      if (hold.open) return { pid, token: hold.token, long: hold.long };
    }
    return undefined;
  }

  /** The counts so far. */
  get stats(): Readonly<CheckStats> {
    return this.#stats;
  }

  /**
   * Checks the next line.
   *
   * @param text One line of the log, without its newline.
   */
  pushLine(text: string): void {
    this.#line++;
    if (text.trim() === "") return;
    const record = parseRecord(text);
    if (record === null) {
      this.#fail("malformed", `not a log record: ${JSON.stringify(text)}`);
      return;
    }
    this.#push(record);
  }

  /**
   * Ends the log: asks still waiting for an outcome are unanswered.
   *
   * @returns The counts and every violation, in log order.
   */
  finish(): CheckResult {
    for (const [pid, line] of this.#pending) {
      this.#fail(
        "unanswered",
        `pid ${pid} asked at line ${line} and the log ended without an outcome`,
        line,
      );
    }
    this.#pending.clear();
    this.#violations.sort((a, b) => a.line - b.line);
    return {
      stats: structuredClone(this.#stats),
      violations: [...this.#violations],
    };
  }

  #push(record: LogRecord): void {
    const stats = this.#stats;
    if ("pid" in record && isWorkerRecord(record)) {
      const gone = this.#gone.get(record.pid);
      if (gone !== undefined) {
        this.#fail(
          "sequence",
          `pid ${record.pid} wrote "${record.event}" after its ${gone}`,
        );
      }
      this.#wrote.add(record.pid);
    }
    switch (record.event) {
      case "ask": {
        const earlier = this.#pending.get(record.pid);
        if (earlier !== undefined) {
          this.#fail(
            "unanswered",
            `pid ${record.pid} asked again with its ask at line ${earlier} unanswered`,
            earlier,
          );
        }
        this.#pending.set(record.pid, this.#line);
        stats.asks++;
        return;
      }
      case "start":
        return this.#start(record.pid, record.gen, record.token, !!record.long);
      case "work":
      case "end":
      case "lost": {
        const hold = this.#holds.get(record.pid);
        if (hold === undefined || hold.token !== record.token) {
          this.#fail(
            "write_outside_hold",
            `pid ${record.pid} wrote "${record.event}" for token ${record.token}, which it does not hold` +
              (hold ? ` (it holds ${hold.token})` : ""),
          );
          return;
        }
        if (record.event === "lost") {
          stats.lost++;
          this.#holds.delete(record.pid);
          return;
        }
        if (record.token < stats.maxToken) {
          this.#fail(
            "stale_write",
            `pid ${record.pid} wrote "${record.event}" with token ${record.token} after token ${stats.maxToken} started`,
          );
        }
        if (record.event === "end") this.#holds.delete(record.pid);
        return;
      }
      case "refused":
        this.#answer(record.pid, "refused");
        stats.refusals++;
        stats.refusalReasons[record.reason] =
          (stats.refusalReasons[record.reason] ?? 0) + 1;
        return;
      case "disconnected":
        this.#pending.delete(record.pid);
        this.#holds.delete(record.pid);
        stats.disconnected++;
        return;
      case "kill":
        return this.#kill(record.pid, record.reason);
      case "exit": {
        const line = this.#pending.get(record.pid);
        if (line !== undefined) {
          this.#fail(
            "unanswered",
            `pid ${record.pid} asked at line ${line} and exited (code ${record.code}) without an outcome`,
            line,
          );
          this.#pending.delete(record.pid);
        }
        // Its connection is gone, so is its hold.
        this.#holds.delete(record.pid);
        if (!this.#gone.has(record.pid)) {
          this.#gone.set(record.pid, `exit at line ${this.#line}`);
        }
        return;
      }
      case "server_kill":
        stats.serverKills++;
        this.#deadServers.add(record.gen);
        for (const hold of this.#holds.values()) {
          if (hold.gen === record.gen) hold.open = false;
        }
        return;
      case "spawn":
        if (this.#wrote.has(record.pid) && !this.#gone.has(record.pid)) {
          // Those lines are the new worker's own: its state stays.
          this.#fail(
            "sequence",
            `pid ${record.pid} was spawned after it had written lines`,
          );
          return;
        }
        // A new process may reuse the pid of one that has exited.
        this.#wrote.delete(record.pid);
        this.#gone.delete(record.pid);
        this.#holds.delete(record.pid);
        this.#pending.delete(record.pid);
        return;
      case "server_start":
      case "shutdown":
        return;
    }
  }

  #start(pid: number, gen: number, token: number, long: boolean): void {
    const stats = this.#stats;
    this.#answer(pid, "start");
    stats.grants++;
    const mine = this.#holds.get(pid);
    if (mine !== undefined) {
      this.#fail(
        "sequence",
        `pid ${pid} started token ${token} while still holding token ${mine.token} (line ${mine.line})`,
      );
    }
    const open = !this.#deadServers.has(gen);
    if (open) {
      for (const [other, hold] of this.#holds) {
        if (other !== pid && hold.open && !hold.overlapped) {
          hold.overlapped = true;
          this.#fail(
            "overlap",
            `pid ${pid} started token ${token} while pid ${other} held token ${hold.token} (since line ${hold.line})`,
          );
        }
      }
    }
    if (token <= stats.maxToken) {
      this.#fail(
        "token_order",
        `pid ${pid} started token ${token}, not above the earlier token ${stats.maxToken}`,
      );
    }
    stats.maxToken = Math.max(stats.maxToken, token);
    this.#holds.set(pid, {
      token,
      gen,
      line: this.#line,
      open,
      long,
      overlapped: false,
    });
  }

  #answer(pid: number, event: string): void {
    if (!this.#pending.delete(pid)) {
      this.#fail("sequence", `pid ${pid} wrote "${event}" without an ask`);
    }
  }

  #kill(pid: number, reason: "chaos" | "straggler"): void {
    const stats = this.#stats;
    const line = this.#pending.get(pid);
    const hold = this.#holds.get(pid);
    if (reason === "straggler") {
      stats.stragglers++;
      if (line !== undefined) {
        this.#fail(
          "unanswered",
          `pid ${pid} asked at line ${line} and had no outcome when the run ended`,
          line,
        );
      }
    } else {
      stats.kills++;
      if (hold?.open) stats.holderKills++;
      else if (line !== undefined) stats.waiterKills++;
    }
    this.#pending.delete(pid);
    this.#holds.delete(pid);
    this.#gone.set(pid, `kill at line ${this.#line}`);
  }

  #fail(kind: ViolationKind, message: string, line: number = this.#line): void {
    this.#violations.push({ kind, line, message });
  }
}

/**
 * Checks a whole log.
 *
 * @param text The log: one JSON record a line.
 * @returns The counts and every violation, in log order.
 *
 * @example Checking a log
 * ```ts ignore
 * const { stats, violations } = checkLog(await Deno.readTextFile(path));
 * ```
 */
export function checkLog(text: string): CheckResult {
  const checker = new LogChecker();
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (const line of lines) checker.pushLine(line);
  return checker.finish();
}

/**
 * Formats records as a log, for tests and hand-made logs.
 *
 * @param records The records, in order.
 * @returns The log text.
 */
export function formatLog(records: readonly LogRecord[]): string {
  return records.map((record) => JSON.stringify(record) + "\n").join("");
}

const WORKER_EVENTS = new Set([
  "ask",
  "start",
  "work",
  "end",
  "lost",
  "refused",
  "disconnected",
]);

function isWorkerRecord(record: LogRecord): record is WorkerRecord {
  return WORKER_EVENTS.has(record.event);
}

/** The integer fields each event needs; other fields are not checked. */
const FIELDS: Record<LogRecord["event"], readonly string[]> = {
  ask: ["pid", "gen"],
  start: ["pid", "gen", "token"],
  work: ["pid", "gen", "token"],
  end: ["pid", "gen", "token"],
  lost: ["pid", "gen", "token"],
  refused: ["pid", "gen"],
  disconnected: ["pid", "gen"],
  server_start: ["gen", "port", "pid"],
  server_kill: ["gen"],
  spawn: ["pid", "gen"],
  kill: ["pid"],
  exit: ["pid", "code"],
  shutdown: [],
};

/**
 * Parses one line of the log.
 *
 * @param text The line.
 * @returns The record, or `null` when the line is not one.
 */
export function parseRecord(text: string): LogRecord | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const record = value as Record<string, unknown>;
  const event = record.event;
  if (typeof event !== "string" || !Object.hasOwn(FIELDS, event)) return null;
  for (const field of FIELDS[event as LogRecord["event"]]) {
    if (!Number.isSafeInteger(record[field])) return null;
  }
  if (event === "refused" && typeof record.reason !== "string") return null;
  if (
    event === "kill" && record.reason !== "chaos" &&
    record.reason !== "straggler"
  ) {
    return null;
  }
  return record as unknown as LogRecord;
}
