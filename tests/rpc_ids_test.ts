// RPC ids are echoed exactly: the reply carries the id's source text, even
// where JSON.parse would round it (2^53 + 1) or overflow it (1e400).
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { writeAll } from "../message/io.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { deadline, startServer } from "./helpers.ts";
import { concat, frameOf } from "./wire.ts";

/** A socket that reads each reply as the exact text the server wrote. */
class TextPeer implements AsyncDisposable {
  readonly #conn: Deno.Conn;
  readonly #texts: string[] = [];
  readonly #decoder = new FrameDecoder((payload) => {
    this.#texts.push(new TextDecoder().decode(payload));
  });
  readonly #buffer = new Uint8Array(65_536);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  static async connect(port: number): Promise<TextPeer> {
    return new TextPeer(await Deno.connect({ port }));
  }

  async send(...json: string[]): Promise<void> {
    await writeAll(this.#conn, concat(json.map(frameOf)));
  }

  async next(): Promise<string> {
    while (this.#texts.length === 0) {
      const n = await deadline(this.#conn.read(this.#buffer), 5000, "a reply");
      if (n === null) throw new Error("The server closed the connection");
      this.#decoder.push(this.#buffer.subarray(0, n));
    }
    return this.#texts.shift()!;
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#conn.close();
    return Promise.resolve();
  }
}

for (
  const id of [
    "9007199254740993",
    "-9007199254740993",
    "1e400",
    "18446744073709551615",
    "1.50",
    '{"n":[9007199254740993,1]}',
  ]
) {
  Deno.test(`the id ${id} comes back as written`, async () => {
    await using server = startServer();
    await using peer = await TextPeer.connect(server.addr.port);
    await peer.send(`{"command":"ping","id":${id}}`);
    assert.equal(await peer.next(), `{"id":${id},"result":{"status":"ok"}}`);
  });
}

Deno.test("a 64-bit id gets its deferred grant, and its error replies, exactly", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  const lock = await holder.lock("shared-name");
  await using peer = await TextPeer.connect(port);
  await peer.send(
    '{"command":"lock","parameters":{"lockName":"shared-name"},"id":9007199254740995}',
    '{"command":"lock","parameters":{"lockName":""},"id":9007199254740997}',
  );
  assert.match(
    await peer.next(),
    /^\{"id":9007199254740997,"result":\{"status":"invalid"\},"error":/,
  );
  await lock.release();
  assert.match(
    await peer.next(),
    /^\{"id":9007199254740995,"result":\{"status":"ok","token":\d+\}\}$/,
  );
});

Deno.test("safe integers and strings are echoed as before", async () => {
  await using server = startServer();
  await using peer = await TextPeer.connect(server.addr.port);
  await peer.send(
    '{"command":"ping","id":9007199254740991}',
    '{"command":"ping","id":"9007199254740993"}',
    '{"command":"ping","id":null}',
  );
  assert.equal(
    await peer.next(),
    '{"id":9007199254740991,"result":{"status":"ok"}}',
  );
  assert.equal(
    await peer.next(),
    '{"id":"9007199254740993","result":{"status":"ok"}}',
  );
  assert.equal(await peer.next(), '{"id":null,"result":{"status":"ok"}}');
});
