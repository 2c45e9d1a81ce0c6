import assert from "node:assert/strict";
import type { Connection } from "../message/connection.ts";
import type { CodedError } from "../message/connection_types.ts";
import type { Message } from "../protocol/frame.ts";
import { HoldAlarms } from "./hold_alarms.ts";
import { Journal } from "./journal.ts";
import { LocalLockSpace } from "./lock_space.ts";
import { LockOutcomes, type Ticket } from "./outcomes.ts";
import { RequestBudget } from "./request_budget.ts";
import { Session } from "./session.ts";

/** A connection that records what it was asked to send. */
class Recording {
  static #lastId = 0;
  readonly id = ++Recording.#lastId;
  readonly remoteAddr: Deno.NetAddr;
  readonly sent: unknown[] = [];
  #next = Promise.withResolvers<void>();

  constructor(hostname: string) {
    this.remoteAddr = { transport: "tcp", hostname, port: 1 };
  }

  /** Resolves at the next message sent. */
  get next(): Promise<void> {
    return this.#next.promise;
  }

  send(message: object): boolean {
    this.sent.push(message);
    this.#next.resolve();
    this.#next = Promise.withResolvers();
    return true;
  }

  reply(id: unknown, result: unknown): boolean {
    return this.send({ id, result });
  }

  /** Records a notice as sent at once: coalescing is the connection's job. */
  notify(_key: unknown, message: object): boolean {
    return this.send(message);
  }

  forget(): void {}

  replyError(message: Message, error: CodedError): void {
    this.send({ id: message.id, error: { code: error.code } });
  }
}

/** A client that sent `hello` (not a legacy one). */
function client(hostname = "127.0.0.1") {
  const connection = new Recording(hostname);
  const session = new Session(connection as unknown as Connection, true);
  session.greeted = true;
  return {
    session,
    sent: connection.sent,
    connection,
  };
}

function ticket(id: number, fields: Partial<Ticket> = {}): Ticket {
  return {
    name: "x",
    mode: "exclusive",
    wait: undefined,
    id,
    timer: undefined,
    asked: Date.now(),
    granted: 0,
    notify: false,
    watching: false,
    position: 0,
    contention: false,
    waitersSeen: 0,
    ...fields,
  };
}

function setup(alarms?: HoldAlarms) {
  const outcomes = new LockOutcomes(
    new Journal({}),
    alarms,
    (events) => new LocalLockSpace(events),
  );
  return outcomes.space;
}

Deno.test({
  name:
    "a grant at once and a grant after a wait are answered alike, and the queue notices follow",
  permissions: "none",
  fn() {
    const space = setup();
    const a = client(), b = client();
    space.acquire(a.session, ticket(1, { contention: true }));
    space.acquire(b.session, ticket(2, { notify: true }));
    assert.equal(space.release(a.session, "x"), true);
    assert.deepEqual(a.sent, [
      { id: 1, result: { status: "ok", token: 1 } },
      { event: "contention", lockName: "x", waiters: 1 },
    ]);
    assert.deepEqual(b.sent, [
      { event: "position", lockName: "x", position: 1 },
      { id: 2, result: { status: "ok", token: 2 } },
    ]);
  },
});

Deno.test({
  name:
    "refusals are answered busy or with their error code; a withdrawn wait is answered cancelled",
  permissions: "none",
  fn() {
    const space = setup();
    const a = client(), b = client();
    space.acquire(a.session, ticket(1));
    space.acquire(a.session, ticket(2));
    space.acquire(b.session, ticket(3, { wait: 0 }));
    space.acquire(b.session, ticket(4));
    space.release(b.session, "x");
    assert.deepEqual(a.sent.slice(1), [
      { id: 2, error: { code: "already_held" } },
    ]);
    assert.deepEqual(b.sent, [
      { id: 3, result: { status: "busy" } },
      { id: 4, result: { status: "cancelled" } },
    ]);
  },
});

Deno.test({
  name:
    "a wait that runs out is answered timeout and never granted, and a holder that leaves takes its alarm with it",
  permissions: "none",
  async fn() {
    const space = setup(new HoldAlarms({ holdTime: 60_000 }));
    const a = client(), b = client();
    space.acquire(a.session, ticket(1));
    space.acquire(b.session, ticket(2, { wait: 1 }));
    const waiting = space.inspect("x")!.waiters[0]!;
    await b.connection.next;
    assert.deepEqual(b.sent, [{ id: 2, result: { status: "timeout" } }]);
    assert.equal(waiting.ticket.timer, undefined);
    // The alarm timer of a's hold is cleared, or the sanitizer fails the test.
    space.releaseAll(a.session, "disconnect");
    assert.equal(space.count("x"), null);
    assert.equal(b.sent.length, 1);
  },
});

Deno.test({
  name:
    "the budget counts every request held and queued, whatever ends it, and knows the oldest hold",
  permissions: "none",
  fn() {
    const budget = new RequestBudget<Ticket>({
      maxRequests: 4,
      maxRequestsPerIp: 4,
    });
    const outcomes = new LockOutcomes(
      new Journal({}),
      undefined,
      (events) => new LocalLockSpace(events),
      budget,
    );
    const space = outcomes.space;
    const a = client(), b = client(), c = client();
    space.acquire(a.session, ticket(1, { name: "x" }));
    space.acquire(b.session, ticket(2, { name: "y" }));
    space.acquire(b.session, ticket(3, { name: "x" }));
    space.acquire(c.session, ticket(4, { name: "x", wait: 0 })); // busy
    space.acquire(a.session, ticket(5, { name: "x" })); // already_held
    assert.equal(budget.size, 3);
    assert.equal(budget.waiting, 1);
    assert.equal(budget.oldestHold()?.ticket.id, 1);
    space.acquire(c.session, ticket(6, { name: "z" }));
    // Four in all: the next asker is refused, whoever it is.
    assert.equal(budget.refusal(c.session), "server");
    // a's release hands x to b: a hold for a wait, the same count.
    space.release(a.session, "x");
    assert.equal(budget.size, 3);
    assert.equal(budget.waiting, 0);
    assert.equal(budget.oldestHold()?.ticket.id, 2);
    assert.equal(budget.refusal(c.session), null);
    space.acquire(a.session, ticket(7, { name: "x" }));
    space.releaseAll(b.session, "disconnect");
    assert.equal(budget.size, 2); // a holds x (granted from the queue), c z
    assert.equal(budget.oldestHold()?.ticket.id, 6);
    space.release(a.session, "x");
    space.release(c.session, "z");
    assert.equal(budget.size, 0);
    assert.equal(budget.oldestHold(), undefined);
  },
});

Deno.test({
  name: "the per-IP budget refuses one address and not another",
  permissions: "none",
  fn() {
    const budget = new RequestBudget<Ticket>({
      maxRequests: 10,
      maxRequestsPerIp: 1,
    });
    const outcomes = new LockOutcomes(
      new Journal({}),
      undefined,
      (events) => new LocalLockSpace(events),
      budget,
    );
    const a = client(), b = client("10.0.0.2");
    outcomes.space.acquire(a.session, ticket(1));
    assert.equal(budget.refusal(a.session), "ip");
    assert.equal(budget.refusal(b.session), null);
  },
});
