// Contention notices: a holder that asks is told how many wait, as waiters
// arrive and leave; `pklock run --on-contention` turns them into a signal.
import assert from "node:assert/strict";
import {
  connect,
  ConnectionError,
  type ContentionEvent,
  LockTimeoutError,
} from "../mod.ts";
import { Inbox, WAIT_MS } from "./events.ts";
import { cli, deadline, RawClient, startServer } from "./helpers.ts";

Deno.test("a holder that asked is told how many wait as waiters arrive and leave", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using first = await connect({ port });
  await using second = await connect({ port });
  await using third = await connect({ port });
  const counts = new Inbox<number>();
  const lock = await holder.lock("hot", { onContention: counts.push });
  const events: ContentionEvent[] = [];
  lock.addEventListener("contention", (event) => {
    events.push((event as CustomEvent<ContentionEvent>).detail);
  });

  const firstGranted = first.lock("hot");
  assert.equal(await counts.next("1 waiter"), 1);
  const controller = new AbortController();
  const secondGranted = second.lock("hot", { signal: controller.signal });
  assert.equal(await counts.next("2 waiters"), 2);
  controller.abort(new Error("no longer needed"));
  await assert.rejects(secondGranted, /no longer needed/);
  assert.equal(await counts.next("1 waiter after the abort"), 1);
  // A wait that runs out, and a waiter whose connection closes, leave too.
  const thirdGranted = third.lock("hot", { wait: 30 });
  assert.equal(await counts.next("2 waiters again"), 2);
  await assert.rejects(thirdGranted, LockTimeoutError);
  assert.equal(await counts.next("1 waiter after the timeout"), 1);
  const firstFailed = assert.rejects(firstGranted, ConnectionError);
  await first.close();
  await firstFailed;
  assert.equal(await counts.next("no waiter"), 0);

  assert.deepEqual(
    events,
    [1, 2, 1, 2, 1, 0].map((waiters) => ({
      event: "contention",
      lockName: "hot",
      waiters,
    })),
  );
  await lock.release();
  assert.deepEqual(counts.pending, []);
});

Deno.test("a waiter granted with others behind it is told how many wait right after the grant", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using next = await connect({ port });
  await using last = await connect({ port });
  const held = await holder.lock("queue");
  const counts = new Inbox<number>();
  const nextGranted = next.lock("queue", { onContention: counts.push });
  await next.ping();
  const lastGranted = last.lock("queue");
  await last.ping();
  await held.release();
  const lock = await deadline(nextGranted, WAIT_MS, "the grant");
  assert.equal(await counts.next("the waiter count"), 1);
  await lock.release();
  await (await deadline(lastGranted, WAIT_MS, "the last grant")).release();
  assert.deepEqual(counts.pending, []);
});

Deno.test("a holder that did not ask for contention notices gets none", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using raw = await RawClient.connect(port);
  const granted = await raw.request({
    command: "lock",
    parameters: { lockName: "quiet" },
    id: 1,
  });
  assert.equal((granted?.result as { status: string }).status, "ok");
  await using first = await connect({ port });
  await using second = await connect({ port });
  const pending = [first.lock("quiet"), second.lock("quiet")];
  await first.ping();
  await second.ping(); // both queued
  // A notice would have been sent before the reply to this ping.
  assert.deepEqual(await raw.request({ command: "ping", id: 2 }), {
    id: 2,
    result: { status: "ok" },
  });
  await raw.close();
  const lock = await deadline(pending[0]!, WAIT_MS, "the first waiter");
  await lock.release();
  await (await deadline(pending[1]!, WAIT_MS, "the second waiter")).release();
});

Deno.test("run --on-contention SIGUSR1 signals the command when another client starts waiting", async () => {
  await using server = startServer();
  const port = server.addr.port;
  // The loop ends by itself once pklock run is gone, should the test fail.
  const script = 'trap "echo got USR1; exit 0" USR1; echo ready; ' +
    "while kill -0 $PPID 2>/dev/null; do sleep 0.05; done";
  await using run = cli([
    "run",
    "contended",
    "-p",
    String(port),
    "--on-contention",
    "SIGUSR1",
    "--",
    "sh",
    "-c",
    script,
  ]);
  await run.waitFor(/ready\n/);
  await using waiter = await connect({ port });
  const granted = waiter.lock("contended");
  const result = await deadline(run.result(), WAIT_MS, "pklock run's exit");
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /got USR1\n/);
  const lock = await deadline(granted, WAIT_MS, "the grant after run");
  await lock.release();
});
