import assert from "node:assert/strict";
import type { Connection } from "../message/connection.ts";
import {
  LocalLockSpace,
  type LockAsk,
  type LockRequest,
  type LockSpaceEvents,
} from "./lock_space.ts";
import { Session } from "./session.ts";

interface Ask extends LockAsk {
  readonly label: string;
}

type Request = LockRequest<Session, Ask>;

let lastId = 0;
function session(): Session {
  const connection = {
    id: ++lastId,
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
  } as unknown as Connection;
  return new Session(connection, true);
}

function ask(
  label: string,
  name = "x",
  mode: "exclusive" | "shared" = "exclusive",
  wait: number | undefined = undefined,
): Ask {
  return { label, name, mode, wait };
}

/** A sink that writes every event as one line, and may act on a grant. */
class Recorder implements LockSpaceEvents<Ask> {
  readonly lines: string[] = [];
  onGrant: (request: Request) => void = () => {};

  granted(request: Request): void {
    this.lines.push(`granted ${request.ticket.label} ${request.token}`);
    this.onGrant(request);
  }
  queued(request: Request): void {
    this.lines.push(`queued ${request.ticket.label}`);
  }
  released(request: Request, cause: string): void {
    this.lines.push(`released ${request.ticket.label} ${cause}`);
  }
  withdrawn(request: Request, cause: string): void {
    this.lines.push(`withdrawn ${request.ticket.label} ${cause}`);
  }
  refused(_session: Session, ticket: Ask, code: string): void {
    this.lines.push(`refused ${ticket.label} ${code}`);
  }
  changed(name: string): void {
    this.lines.push(`changed ${name}`);
  }
}

function setup() {
  const events = new Recorder();
  return { events, space: new LocalLockSpace<Ask>(events) };
}

Deno.test({
  name:
    "an immediate grant and a grant after a wait are reported the same way, the release first",
  permissions: "none",
  fn() {
    const { events, space } = setup();
    const a = session(), b = session();
    space.acquire(a, ask("a"));
    space.acquire(b, ask("b"));
    assert.equal(space.release(a, "x"), true);
    assert.deepEqual(events.lines, [
      "granted a 1",
      "changed x",
      "queued b",
      "changed x",
      "released a client",
      "granted b 2",
      "changed x",
    ]);
  },
});

Deno.test({
  name: "refusals are reported with the ticket and leave nothing behind",
  permissions: "none",
  fn() {
    const { events, space } = setup();
    const a = session(), b = session();
    space.acquire(a, ask("a"));
    space.acquire(a, ask("again"));
    space.acquire(b, ask("busy", "x", "exclusive", 0));
    space.acquire(b, ask("y", "y"));
    space.acquire(a, ask("wait-y", "y"));
    space.acquire(b, ask("cycle"));
    assert.deepEqual(events.lines.filter((line) => line.startsWith("ref")), [
      "refused again already_held",
      "refused busy busy",
      "refused cycle deadlock",
    ]);
    assert.equal(space.countOf(b), 1);
    assert.equal(space.count("x")?.waiters, 0);
  },
});

Deno.test({
  name:
    "a withdrawal reports the grants it allows, then itself; a second withdrawal does nothing",
  permissions: "none",
  fn() {
    const { events, space } = setup();
    const a = session(), b = session(), c = session();
    space.acquire(a, ask("a", "x", "shared"));
    space.acquire(b, ask("b"));
    space.acquire(c, ask("c", "x", "shared"));
    const waiting = space.inspect("x")!.waiters[0]!;
    events.lines.length = 0;
    space.withdraw(waiting, "timeout");
    space.withdraw(waiting, "timeout");
    assert.equal(space.release(b, "x"), false);
    assert.deepEqual(events.lines, [
      "granted c 2",
      "withdrawn b timeout",
      "changed x",
    ]);
  },
});

Deno.test({
  name:
    "releaseAll ends holds with the cause given and withdraws waits as disconnect",
  permissions: "none",
  fn() {
    const { events, space } = setup();
    const a = session(), b = session(), c = session();
    space.acquire(a, ask("a-x"));
    space.acquire(c, ask("c-y", "y"));
    space.acquire(a, ask("a-y", "y"));
    space.acquire(b, ask("b-x"));
    events.lines.length = 0;
    space.releaseAll(a, "force");
    assert.deepEqual(events.lines, [
      "released a-x force",
      "withdrawn a-y disconnect",
      "granted b-x 3",
      "changed x",
      "changed y",
    ]);
    assert.equal(space.countOf(a), 0);
  },
});

Deno.test({
  name:
    "a connection that closes while its first grant is answered never hears of its second, and the next waiters are granted once",
  permissions: "none",
  fn() {
    const { events, space } = setup();
    const holder = session(), waiter = session(), next = session();
    space.acquire(holder, ask("h-x"));
    space.acquire(holder, ask("h-y", "y"));
    space.acquire(waiter, ask("w-x"));
    space.acquire(waiter, ask("w-y", "y"));
    space.acquire(next, ask("n-y", "y"));
    events.lines.length = 0;
    // As when the grant's reply passes the waiter's output cap.
    events.onGrant = (request) => {
      if (request.owner === waiter) space.releaseAll(waiter, "disconnect");
    };
    space.releaseAll(holder, "disconnect");
    assert.deepEqual(events.lines, [
      "released h-x disconnect",
      "released h-y disconnect",
      "granted w-x 3",
      "released w-x disconnect",
      "withdrawn w-y disconnect",
      "changed x",
      "changed y",
      "granted n-y 5",
      "changed x",
      "changed y",
    ]);
    assert.equal(space.count("x"), null);
    assert.equal(space.inspect("y")?.holders[0]?.owner, next);
  },
});
