import assert from "node:assert/strict";
import type { Connection } from "../message/connection.ts";
import { MessageError } from "../message/errors.ts";
import type { StatusLock, StatusResult } from "../protocol/lock_protocol.ts";
import { LocalLockSpace, type LockSpaceEvents } from "./lock_space.ts";
import type { Ticket } from "./outcomes.ts";
import { Session } from "./session.ts";
import { PAGE_BYTES, StatusReports } from "./status.ts";

function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name, permissions: "none", fn });
}

const encoder = new TextEncoder();

/** A session whose connection reports `unread` bytes pending. */
function session(label?: string): Session & { unread: number } {
  const connection = {
    id: ++lastId,
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 4000 },
    pendingBytes: 0,
  };
  const made = new Session(connection as unknown as Connection, true);
  if (label !== undefined) made.label = label;
  return Object.defineProperty(made, "unread", {
    set: (n: number) => connection.pendingBytes = n,
  }) as Session & { unread: number };
}
let lastId = 0;

const IGNORE: LockSpaceEvents<Ticket> = {
  granted: () => {},
  queued: () => {},
  released: () => {},
  withdrawn: () => {},
  refused: () => {},
  changed: () => {},
};

function ticket(
  name: string,
  mode: "exclusive" | "shared" = "exclusive",
  asked = Date.now(),
) {
  return {
    name,
    mode,
    wait: undefined,
    asked,
    granted: asked,
  } as unknown as Ticket;
}

function setup(
  bounds: { pageBytes?: number; idleMs?: number; maxOutputBytes?: number } = {},
) {
  const space = new LocalLockSpace<Ticket>(IGNORE);
  const reports = new StatusReports(space, {
    startedAt: Date.now(),
    connections: () => ({ current: 1, total: 1 }),
  }, bounds);
  return { space, reports };
}

/** Asks for every page, checks each one's size, and joins them. */
function readAll(
  reports: StatusReports,
  asker: Session,
  parameters: Record<string, unknown> = {},
  pageBytes = PAGE_BYTES,
): { locks: StatusLock[]; pages: number; last: StatusResult } {
  const locks: StatusLock[] = [];
  let page = reports.answer({ command: "status", id: 1, parameters }, asker)!;
  let pages = 1;
  while (true) {
    const bytes = encoder.encode(JSON.stringify({ id: 1, result: page }));
    assert.ok(bytes.length <= pageBytes, `page ${pages}: ${bytes.length} B`);
    for (const lock of page.locks) {
      const last = locks.at(-1);
      if (last?.more && last.name === lock.name) {
        last.holders.push(...lock.holders);
        last.waiters.push(...lock.waiters);
        if (!lock.more) delete last.more;
      } else locks.push({ ...lock });
    }
    if (page.next === undefined) return { locks, pages, last: page };
    page = reports.answer({
      command: "status",
      id: 1,
      parameters: { cursor: page.next },
    }, asker)!;
    pages++;
  }
}

test("a small report is one page, with every lock and its totals", () => {
  const { space, reports } = setup();
  const a = session("worker a"), b = session();
  space.acquire(a, ticket("x"));
  space.acquire(b, ticket("x", "shared"));
  space.acquire(b, ticket("y", "shared"));
  const page = reports.answer({ command: "status", id: 1 }, a)!;
  assert.equal(page.next, undefined);
  assert.deepEqual(page.totals, { locks: 2, holders: 2, waiters: 1 });
  assert.deepEqual(
    page.locks.map((lock) => [
      lock.name,
      lock.holders.map((h) => [h.connectionId, h.label, h.token]),
      lock.waiters.map((w) => [w.connectionId, w.mode]),
    ]),
    [
      ["x", [[a.id, "worker a", 1]], [[b.id, "shared"]]],
      ["y", [[b.id, undefined, 2]], []],
    ],
  );
  assert.ok(page.locks[0]!.holders[0]!.elapsed >= 0);
  assert.equal(a.statusScan, undefined, "a finished report is let go");
});

test("a large report comes in bounded pages, every lock exactly once", () => {
  const { space, reports } = setup();
  const holder = session("a label of a fair length, as deployments set them");
  for (let i = 0; i < 5_000; i++) space.acquire(holder, ticket(`jobs.${i}`));
  const asker = session();
  const { locks, pages, last } = readAll(reports, asker);
  assert.ok(pages > 10, `${pages} pages`);
  assert.deepEqual(
    locks.map((lock) => lock.name),
    Array.from({ length: 5_000 }, (_, i) => `jobs.${i}`),
  );
  assert.deepEqual(last.totals, { locks: 5_000, holders: 5_000, waiters: 0 });
});

test("a page is at most a quarter of the output cap, so status never reaches it", () => {
  const { space, reports } = setup({ maxOutputBytes: 8192 });
  const holder = session("label");
  for (let i = 0; i < 200; i++) space.acquire(holder, ticket(`n.${i}`));
  const { locks, pages } = readAll(reports, session(), {}, 2048);
  assert.equal(locks.length, 200);
  assert.ok(pages > 5, `${pages} pages`);
});

test("locks taken and released while a report is read are listed once at most", () => {
  const { space, reports } = setup({ pageBytes: 2048 });
  const holder = session(), churner = session();
  for (let i = 0; i < 500; i++) space.acquire(holder, ticket(`stays.${i}`));
  const asker = session();
  const names: string[] = [];
  let page = reports.answer({ command: "status", id: 1 }, asker)!;
  for (let round = 0; page.next !== undefined; round++) {
    names.push(...page.locks.map((lock) => lock.name));
    // Taken anew each page, later than the report began (the clock moves
    // on): a walk of the table meets it again every time.
    const later = Date.now() + 1 + round;
    space.release(churner, "churn");
    space.acquire(churner, ticket("churn", "exclusive", later));
    space.acquire(churner, ticket(`new.${round}`, "exclusive", later));
    page = reports.answer({
      command: "status",
      id: 1,
      parameters: { cursor: page.next },
    }, asker)!;
  }
  names.push(...page.locks.map((lock) => lock.name));
  const stays = names.filter((name) => name.startsWith("stays."));
  assert.deepEqual(stays, Array.from({ length: 500 }, (_, i) => `stays.${i}`));
  assert.equal(new Set(names).size, names.length, "no lock twice");
  assert.equal(page.totals!.locks, names.length);
});

test("a lock with more waiters than a page holds is split, marked more", () => {
  const { space, reports } = setup({ pageBytes: 4096 });
  const holder = session();
  space.acquire(holder, ticket("big"));
  const waiters = Array.from({ length: 300 }, () => session());
  for (const waiter of waiters) space.acquire(waiter, ticket("big"));
  space.acquire(holder, ticket("small"));
  const { locks, pages } = readAll(reports, session(), {}, 4096);
  assert.ok(pages > 10, `${pages} pages`);
  assert.deepEqual(locks.map((lock) => [lock.name, lock.more]), [
    ["big", undefined],
    ["small", undefined],
  ]);
  assert.deepEqual(
    locks[0]!.waiters.map((w) => w.connectionId),
    waiters.map((w) => w.id),
  );
});

test("a pattern and a limit bound the list; the totals count every match", () => {
  const { space, reports } = setup();
  const holder = session(), waiter = session();
  for (let i = 0; i < 3_000; i++) {
    space.acquire(holder, ticket(i % 3 === 0 ? `jobs.${i}` : `other.${i}`));
  }
  space.acquire(waiter, ticket("jobs.0"));
  const { locks, last } = readAll(reports, session(), {
    pattern: "jobs.*",
    limit: 5,
  });
  assert.deepEqual(locks.map((lock) => lock.name), [
    "jobs.0",
    "jobs.3",
    "jobs.6",
    "jobs.9",
    "jobs.12",
  ]);
  assert.deepEqual(last.totals, { locks: 1_000, holders: 1_000, waiters: 1 });
  const none = readAll(reports, session(), { pattern: "nothing?" });
  assert.deepEqual(none.locks, []);
  assert.deepEqual(none.last.totals, { locks: 0, holders: 0, waiters: 0 });
});

test("a new report replaces the one in progress; its cursor is refused", () => {
  const { space, reports } = setup();
  const holder = session();
  for (let i = 0; i < 5_000; i++) space.acquire(holder, ticket(`n${i}`));
  const asker = session();
  const first = reports.answer({ command: "status", id: 1 }, asker)!;
  const second = reports.answer({ command: "status", id: 2 }, asker)!;
  assert.notEqual(first.next, second.next);
  assert.throws(
    () =>
      reports.answer({
        command: "status",
        id: 3,
        parameters: { cursor: first.next },
      }, asker),
    (error) =>
      error instanceof MessageError && error.code === "invalid_parameters",
  );
  const next = reports.answer({
    command: "status",
    id: 4,
    parameters: { cursor: second.next },
  }, asker)!;
  assert.notEqual(next.next, second.next, "a cursor is good for one page");
  assert.throws(
    () =>
      reports.answer({
        command: "status",
        id: 5,
        parameters: { cursor: second.next },
      }, asker),
    (error) =>
      error instanceof MessageError && error.code === "invalid_parameters",
  );
  asker.end("peer_closed");
  assert.equal(asker.statusScan, undefined, "a closed connection's is let go");
});

test("status is refused while two pages of replies are unread", () => {
  const { reports } = setup({ pageBytes: 1000 });
  const asker = session();
  asker.unread = 2001;
  assert.throws(
    () => reports.answer({ command: "status", id: 1 }, asker),
    (error) => error instanceof MessageError && error.code === "limit_exceeded",
  );
  asker.unread = 2000;
  assert.equal(
    reports.answer({ command: "status", id: 1 }, asker)!.status,
    "ok",
  );
});

test("bad parameters get invalid_parameters", () => {
  const { reports } = setup();
  for (
    const parameters of [
      [],
      { pattern: "" },
      { pattern: 7 },
      { pattern: "x".repeat(1025) },
      { limit: -1 },
      { limit: 1.5 },
      { limit: "3" },
      { cursor: 1 },
    ]
  ) {
    assert.throws(
      () => reports.answer({ command: "status", id: 1, parameters }, session()),
      (error) =>
        error instanceof MessageError && error.code === "invalid_parameters",
      JSON.stringify(parameters),
    );
  }
});

test("a report idle past its bound is dropped", async () => {
  const { space, reports } = setup({ idleMs: 10 });
  const holder = session();
  for (let i = 0; i < 5_000; i++) space.acquire(holder, ticket(`n${i}`));
  const asker = session();
  const first = reports.answer({ command: "status", id: 1 }, asker)!;
  assert.ok(asker.statusScan !== undefined);
  const { promise, resolve } = Promise.withResolvers<void>();
  // The drop is a timer of its own: wait for a later one to fire.
  setTimeout(resolve, 50);
  await promise;
  assert.equal(asker.statusScan, undefined);
  assert.throws(() =>
    reports.answer({
      command: "status",
      id: 2,
      parameters: { cursor: first.next },
    }, asker)
  );
});
