// The connection limit is derived from the open-file limit minus what the
// server keeps for itself: past it, new peers are refused at once, while
// existing holders are served and a fencing-token block is still reserved.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { writeAll } from "../message/io.ts";
import { connectionLimit, RESERVED_DESCRIPTORS } from "../message/admission.ts";
import { encodeFrame, FrameDecoder, type Message } from "../protocol/frame.ts";
import { deadline, inTempDir, MAIN, settingsFile } from "./helpers.ts";
import { concat } from "./wire.ts";

const FILES = 256;

Deno.test("connectionLimit keeps the reserve below the open-file limit", {
  permissions: "none",
}, () => {
  assert.equal(connectionLimit(undefined, FILES), FILES - RESERVED_DESCRIPTORS);
  assert.equal(connectionLimit(100_000, FILES), FILES - RESERVED_DESCRIPTORS);
  assert.equal(connectionLimit(10, FILES), 10);
  assert.equal(connectionLimit(10, undefined), 10);
  assert.equal(connectionLimit(undefined, undefined), Infinity);
});

/** A bare socket and the frames it has read. */
class Peer {
  readonly conn: Deno.Conn;
  readonly #messages: Message[] = [];
  readonly #decoder = new FrameDecoder((payload) => {
    this.#messages.push(JSON.parse(new TextDecoder().decode(payload)));
  });
  readonly #buffer = new Uint8Array(65_536);

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** The next message, `null` at the end of the stream. */
  async next(ms: number): Promise<Message | null> {
    while (this.#messages.length === 0) {
      const n = await deadline(this.conn.read(this.#buffer), ms, "a frame");
      if (n === null) return null;
      this.#decoder.push(this.#buffer.subarray(0, n));
    }
    return this.#messages.shift()!;
  }
}

Deno.test("with ulimit -n 256, peers past the limit are refused at once, and holders and token reservations carry on", async () => {
  await inTempDir(async (dir) => {
    const stateFile = `${dir}/state.json`;
    // More than the descriptors allow: lowered, with a warning.
    const config = await settingsFile(dir, {
      limits: { maxConnections: 100_000 },
    });
    const child = new Deno.Command("sh", {
      args: [
        "-c",
        `ulimit -n ${FILES}; exec "$0" run -A "$1" serve --port 0 --state-file "$2" --config "$3"`,
        Deno.execPath(),
        MAIN,
        stateFile,
        config,
      ],
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const peers: Peer[] = [];
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let printed = "";
      while (!/listening on [^:]+:(\d+)/.test(printed)) {
        const { value, done } = await deadline(reader.read(), 30_000, "start");
        assert.equal(done, false, `the server exited: ${printed}`);
        printed += value;
      }
      reader.releaseLock();
      const port = Number(/listening on [^:]+:(\d+)/.exec(printed)![1]);
      await using holder = await connect({ port });
      const held = await holder.lock("held");

      // Open connections until one is refused: each proves it was accepted
      // with a ping, and none may hang unanswered in the backlog.
      let refusal: Message | null = null;
      while (refusal === null && peers.length < 2 * FILES) {
        const peer = new Peer(await Deno.connect({ port }));
        peers.push(peer);
        await writeAll(peer.conn, encodeFrame({ command: "ping", id: 1 }));
        const first = await peer.next(5_000).catch((error) => {
          throw new Error(`Connection ${peers.length + 1}: ${error.message}`);
        });
        if (first?.error !== undefined) refusal = first;
        else assert.deepEqual(first, { id: 1, result: { status: "ok" } });
      }
      const limit = FILES - RESERVED_DESCRIPTORS;
      assert.deepEqual(refusal, {
        error: {
          code: "too_many_connections",
          message: `Too many connections: the limit is ${limit}`,
        },
      });
      assert.equal(peers.length, limit, "the holder and the accepted peers");
      assert.equal(await peers.at(-1)!.next(5_000), null, "refused: closed");

      // The holder is served, and 10,100 grants need a second token block.
      await holder.ping();
      const worker = peers[0]!;
      const frames: Uint8Array[] = [];
      for (let i = 0; i < 1_010; i++) {
        frames.push(encodeFrame({
          command: "lock",
          parameters: { lockName: "counted" },
          id: i,
        }));
        frames.push(encodeFrame({
          command: "unlock",
          lockName: "counted",
        }));
      }
      const batch = concat(frames);
      let token = 0;
      for (let round = 0; round < 10; round++) {
        await writeAll(worker.conn, batch);
        for (let i = 0; i < 2 * 1_010; i++) {
          const reply = await worker.next(10_000);
          const result = reply?.result as { token?: number } | undefined;
          token = Math.max(token, result?.token ?? 0);
        }
      }
      assert.ok(token > 10_000, `tokens past the first block (${token})`);
      const state = JSON.parse(await Deno.readTextFile(stateFile));
      assert.ok(state.reserved >= 20_000, `reserved ${state.reserved}`);
      assert.equal(held.lost.aborted, false);
      await held.release();
    } finally {
      for (const peer of peers) peer.conn.close();
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    }
    assert.match(
      await stderr,
      /maxConnections 100000 is more than the open-file limit allows: serving at most 192 connections/,
    );
  });
});
