import assert from "node:assert/strict";
import type { CodedError, Connection } from "../message/connection.ts";
import type { Message } from "../protocol/frame.ts";
import { HoldAlarms } from "./hold_alarms.ts";
import { Journal } from "./journal.ts";
import { LocalLockSpace } from "./lock_space.ts";
import { LockOutcomes, type Ticket } from "./outcomes.ts";
import { Session } from "./session.ts";

/** A connection that records what it was asked to send. */
class Recording {
  static #lastId = 0;
  readonly id = ++Recording.#lastId;
  readonly remoteAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
  readonly sent: unknown[] = [];
  #next = Promise.withResolvers<void>();

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

function client() {
  const connection = new Recording();
  return {
    session: new Session(connection as unknown as Connection, true),
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
