// Notices that describe state (queue positions, waiter counts) are coalesced:
// one pending value per hold or waiter, never counted toward the output cap,
// so a holder that stops reading keeps its lock however others churn on it.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { MessageServer } from "../message/mod.ts";
import { writeAll } from "../message/io.ts";
import { encodeFrame, FrameDecoder, type Message } from "../protocol/frame.ts";
import { deadline, DenoProcess, RawClient, startServer } from "./helpers.ts";
import { concat } from "./wire.ts";

const CYCLES = 100_000;
const BATCH = 1_000;

Deno.test("a stopped holder with contention notices keeps its lock through 100,000 lock/release cycles of others", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = new DenoProcess(
    new URL("./fixtures/contention_holder.ts", import.meta.url).pathname,
    [String(port), "hot"],
  );
  await holder.waitFor(/held \d+/);
  holder.kill("SIGSTOP");
  let grants = 0;
  let firstGrant: number | undefined;
  try {
    await using churner = await RawClient.connect(port);
    // Each cycle queues behind the stopped holder and withdraws: two
    // contention notices for it (1 waiter, then none).
    const frames: Uint8Array[] = [];
    for (let i = 0; i < BATCH; i++) {
      frames.push(encodeFrame({
        command: "lock",
        parameters: { lockName: "hot", wait: 600_000 },
        id: 2 * i,
      }));
      frames.push(encodeFrame({
        command: "release",
        parameters: { lockName: "hot" },
        id: 2 * i + 1,
      }));
    }
    const batch = concat(frames);
    for (let done = 0; done < CYCLES; done += BATCH) {
      await churner.write(batch);
      for (let i = 0; i < 2 * BATCH; i++) {
        const reply = await deadline(churner.next(), 10_000, "a churn reply");
        const status = (reply?.result as { status?: string }).status;
        if (status === "ok" && (reply?.id as number) % 2 === 0) {
          grants++;
          firstGrant ??= done + i / 2;
        }
      }
    }
  } finally {
    holder.kill("SIGCONT");
  }
  assert.equal(
    grants,
    0,
    `nobody else is granted the stopped holder's lock (${grants} grants, the first at cycle ${firstGrant})`,
  );
  // Two waiters now: a count the churn never produced, so reading it proves
  // the holder got the latest value.
  await using first = await connect({ port });
  await using second = await connect({ port });
  const firstGranted = first.lock("hot");
  const secondGranted = second.lock("hot");
  await holder.waitFor(/waiters 2\n/);
  const status = await first.status();
  const hot = status.locks.find((lock) => lock.name === "hot");
  assert.deepEqual(hot?.holders.map((entry) => entry.label), [
    "contention-holder",
  ]);
  assert.equal(hot?.waiters.length, 2);
  holder.kill("SIGKILL");
  (await firstGranted).release();
  await secondGranted.then((lock) => lock.release());
});

Deno.test("notices a peer does not read replace each other and never close it", async () => {
  const SENT = 200_000;
  const flooded = Promise.withResolvers<void>();
  await using server = new MessageServer({
    maxOutputBytes: 1024,
    handlers: {
      flood: (_message, connection) => {
        // Across many ticks, so that the writer waits on the full socket
        // while notices keep coming.
        let n = 0;
        const burst = () => {
          for (let i = 0; i < 2_000 && n < SENT; i++) {
            connection.notify("count", { event: "count", n: ++n });
          }
          if (n < SENT) return setTimeout(burst, 0);
          connection.send({ event: "done" });
          flooded.resolve();
        };
        burst();
        return undefined;
      },
    },
  });
  // A bare socket, not read from until the flood is over.
  const peer = await Deno.connect({ port: server.addr.port });
  try {
    await writeAll(peer, encodeFrame({ command: "flood" }));
    await deadline(flooded.promise, 30_000, "the flood");
    const connection = [...server.connections][0]!;
    assert.equal(connection.open, true, "the peer was never closed");
    const messages: Message[] = [];
    const decoder = new FrameDecoder((payload) => {
      messages.push(JSON.parse(new TextDecoder().decode(payload)));
    });
    const buffer = new Uint8Array(65_536);
    // A notice leaves when the socket takes bytes: it may follow "done".
    const finished = () =>
      messages.some((message) => message.event === "done") &&
      messages.some((message) => message.n === SENT);
    while (!finished()) {
      const n = await deadline(peer.read(buffer), 10_000, "the notices");
      assert.notEqual(n, null, "the server closed the connection");
      decoder.push(buffer.subarray(0, n!));
    }
    const counts = messages.filter((message) => message.event === "count")
      .map((message) => message.n as number);
    assert.equal(counts.at(-1), SENT, "the latest value arrives last");
    assert.ok(
      counts.length < SENT,
      `notices were coalesced (${counts.length} of ${SENT} written)`,
    );
  } finally {
    peer.close();
  }
});
