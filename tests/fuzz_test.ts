// Fuzzing a live server with fast-check: random frames and byte streams, cut
// at random points, over real TCP. Whatever they hold, the lock table stays
// sound, the good client keeps its lock, and nothing outlives them.
// (Oversize, empty, non-JSON and invalid UTF-8 frames, a 4 GiB length prefix,
// unknown commands and wrong parameter types each have a test of their own
// in bad_input_test.ts and message_layer_test.ts.)
import assert from "node:assert/strict";
import fc from "fast-check";
import { connect } from "../mod.ts";
import { encodeFrame } from "../protocol/frame.ts";
import { assertConsistent } from "./assertions.ts";
import { deadline, RawClient, startServer } from "./helpers.ts";
import { concat, lengthPrefix } from "./wire.ts";

const COMMANDS = [
  "hello",
  "ping",
  "status",
  "lock",
  "release",
  "unlock",
  "heartbeat",
  "fly",
  "",
  "__proto__",
  "constructor",
  "toString",
] as const;

const json = fc.jsonValue({ maxDepth: 2 });
const lockName = fc.oneof(
  { arbitrary: fc.constantFrom("precious", "fuzz-a", "fuzz-b"), weight: 3 },
  fc.string({ maxLength: 8 }),
  json,
);
const parameters = fc.oneof(
  json,
  {
    arbitrary: fc.record({
      lockName,
      mode: fc.oneof(fc.constantFrom("exclusive", "shared"), json),
      wait: fc.oneof(fc.integer({ min: 0, max: 20 }), json),
      notify: fc.oneof(fc.boolean(), json),
      secret: json,
    }, { requiredKeys: [] }),
    weight: 3,
  },
);
const request = fc.record({
  command: fc.oneof(
    { arbitrary: fc.constantFrom(...COMMANDS), weight: 4 },
    json,
  ),
  parameters,
  id: fc.oneof(fc.nat(), json),
  lockName,
}, { requiredKeys: [] });

/** Well-formed lock-protocol requests on a few names, so that locks change hands. */
const wellFormed = fc.oneof(
  fc.record({
    command: fc.constant("lock"),
    parameters: fc.record({
      lockName: fc.constantFrom("precious", "fuzz-a", "fuzz-b"),
      mode: fc.constantFrom("exclusive", "shared"),
      wait: fc.integer({ min: 0, max: 20 }),
      notify: fc.boolean(),
    }, { requiredKeys: ["lockName"] }),
    id: fc.nat(),
  }),
  fc.record({
    command: fc.constant("release"),
    parameters: fc.record({
      lockName: fc.constantFrom("precious", "fuzz-a", "fuzz-b"),
    }),
    id: fc.nat(),
  }),
  fc.record({
    command: fc.constant("unlock"),
    lockName: fc.constantFrom("precious", "fuzz-a", "fuzz-b"),
  }),
);

/** A whole frame: a request, well-formed or not, or any JSON value. */
const frame: fc.Arbitrary<Uint8Array> = fc.oneof(
  { arbitrary: wellFormed, weight: 3 },
  { arbitrary: request, weight: 3 },
  json,
).map((value) => encodeFrame(value));

/** Anything at all: random bytes, random length prefixes, frames. */
const piece: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 24 }),
  frame,
  fc.tuple(
    fc.oneof(fc.nat({ max: 64 }), fc.nat(), fc.constant(0xffffffff)),
    fc.uint8Array({ maxLength: 16 }),
  ).map(([length, body]) => concat([lengthPrefix(length), body])),
);

/**
 * What one fuzz connection sends: whole frames (then a ping whose reply shows
 * they have all been handled), then anything, both cut at random points.
 */
const stream = fc.record({
  frames: fc.array(frame, { maxLength: 6 }),
  tail: fc.array(piece, { maxLength: 4 }),
  cuts: fc.array(fc.nat(), { maxLength: 4 }),
});

const SENTINEL = "pklock-fuzz-sentinel";

/** Writes bytes in pieces cut at the cut points; `false` once the server closed. */
async function writeCut(
  raw: RawClient,
  bytes: Uint8Array,
  cuts: number[],
): Promise<boolean> {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))]
    .sort((x, y) => x - y);
  let from = 0;
  for (const to of [...points, bytes.length]) {
    if (to <= from) continue;
    try {
      await raw.write(bytes.subarray(from, to));
    } catch {
      return false; // The server has closed this connection: fine.
    }
    from = to;
  }
  return true;
}

/**
 * Opens a connection and sends the stream's frames; resolves once the server
 * has handled them all (or closed the connection), leaving the tail unsent.
 */
async function driveFrames(
  port: number,
  input: { frames: Uint8Array[]; cuts: number[] },
): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  const bytes = concat([
    ...input.frames,
    encodeFrame({ command: "ping", id: SENTINEL }),
  ]);
  if (await writeCut(raw, bytes, input.cuts)) {
    const handled = (async () => {
      for (let message; (message = await raw.next()) !== null;) {
        if (message.id === SENTINEL) return;
      }
    })();
    await deadline(handled, 5000, "the fuzz frames to be handled");
  }
  return raw;
}

Deno.test("random frames and byte streams leave the server serving and the good client's lock alone", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using good = await connect({ port });
  await using checker = await connect({ port });
  const precious = await good.lock("precious");
  await fc.assert(
    fc.asyncProperty(
      fc.array(stream, { minLength: 1, maxLength: 3 }),
      async (inputs) => {
        const raws: RawClient[] = [];
        try {
          for (const input of inputs) raws.push(await driveFrames(port, input));
          // Whatever the fuzz connections hold or wait for, the table is
          // sound and the good client still holds its lock.
          const during = await checker.status();
          assertConsistent(during);
          assert.deepEqual(
            during.locks.find((lock) => lock.name === "precious")?.holders
              .map((request) => request.connectionId),
            [good.server.connectionId],
          );
          await Promise.all(
            raws.map((raw, i) =>
              writeCut(raw, concat(inputs[i]!.tail), inputs[i]!.cuts)
            ),
          );
        } finally {
          await Promise.all(raws.map(async (raw) => {
            try {
              await raw.closeWrite();
            } catch {
              // Closed by the server already.
            }
            // The server reads all that was sent, then the end of the
            // stream, and closes: its close hook has run by then.
            await deadline(raw.ended(), 5000, "the fuzz connection to end");
            await raw.close();
          }));
        }
        await using fresh = await connect({ port });
        await fresh.ping();
        assert.equal(precious.lost.aborted, false);
        assert.equal(await checker.tryLock("precious"), null);
        const status = await checker.status();
        assertConsistent(status);
        // Nothing the fuzz connections did outlives them.
        assert.deepEqual(
          status.locks.map((lock) => ({
            name: lock.name,
            holders: lock.holders.map((request) => request.connectionId),
            waiters: lock.waiters.length,
          })),
          [{
            name: "precious",
            holders: [good.server.connectionId],
            waiters: 0,
          }],
        );
        assert.equal(status.connections.current, 3); // good, checker, fresh
      },
    ),
    { numRuns: 100 },
  );
  await precious.release();
});
