// Lock.release(): a release the server answers `notFound` for a lock the
// client believed held is a loss, and so is one the server announced it had
// forced; `ok`, or a close without a word, is a release. A scripted server
// over a real socket sends the replies, frame by frame, that the real server
// would send only in a race; `pklock run` against it exits 6 and says why.
import assert from "node:assert/strict";
import { connect, LockLostError } from "../mod.ts";
import { encodeFrame, FrameDecoder, type Message } from "../protocol/frame.ts";
import { writeAll } from "../message/io.ts";
import { deadline, runCli } from "./helpers.ts";

/** What the scripted server does with a `release`. */
type OnRelease = "ok" | "notFound" | "forced" | "close";

/**
 * A server that speaks the framing and answers `hello`, `lock` (granted,
 * token 7), `ping`, and `release` as the test says: a reply, a forced
 * release's farewell and close, or a close without a word.
 */
class ScriptedServer implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #onRelease: OnRelease;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #serving: Promise<void>;
  /** Every message received, in order. */
  readonly received: Message[] = [];

  constructor(onRelease: OnRelease) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#onRelease = onRelease;
    this.#serving = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  async #accept(): Promise<void> {
    const serving: Promise<void>[] = [];
    try {
      for await (const conn of this.#listener) {
        this.#conns.add(conn);
        serving.push(this.#serve(conn));
      }
    } finally {
      await Promise.all(serving);
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const inbox: Message[] = [];
    const decoder = new FrameDecoder((payload) =>
      inbox.push(JSON.parse(new TextDecoder().decode(payload)))
    );
    const buffer = new Uint8Array(4096);
    try {
      for (let n; (n = await conn.read(buffer)) !== null;) {
        decoder.push(buffer.subarray(0, n));
        for (const message of inbox.splice(0)) {
          this.received.push(message);
          if (!await this.#answer(conn, message)) return;
        }
      }
    } catch {
      // Closed by the test's end.
    } finally {
      this.#close(conn);
    }
  }

  /** Answers one message; `false` once the connection is to close. */
  async #answer(conn: Deno.TcpConn, message: Message): Promise<boolean> {
    const { id } = message;
    const parameters = message.parameters as Record<string, unknown>;
    const reply = (result: object) =>
      writeAll(conn, encodeFrame({ id, result }));
    switch (message.command) {
      case "hello":
        await reply({
          status: "ok",
          server: "pklock",
          version: "0.0.0",
          protocol: 1,
          connectionId: 1,
        });
        return true;
      case "lock":
        await reply({ status: "ok", token: 7 });
        return true;
      case "release":
        if (this.#onRelease === "ok" || this.#onRelease === "notFound") {
          await reply({ status: this.#onRelease });
          return true;
        }
        if (this.#onRelease === "forced") {
          // As the real server does when the force comes first: the event,
          // then the close, and no reply to what it did not read.
          await writeAll(
            conn,
            encodeFrame({
              event: "forced_release",
              lockName: parameters.lockName,
              token: 7,
            }),
          );
        }
        return false;
      default:
        await reply({ status: "ok" });
        return true;
    }
  }

  #close(conn: Deno.TcpConn): void {
    if (this.#conns.delete(conn)) conn.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    for (const conn of [...this.#conns]) this.#close(conn);
    await this.#serving;
  }
}

Deno.test("release() resolves when the server answers ok, and the lock is not lost", async () => {
  await using server = new ScriptedServer("ok");
  await using client = await connect({ port: server.port });
  const lock = await client.lock("a");
  await lock.release();
  assert.equal(lock.lost.aborted, false);
  assert.equal(lock.held, false);
  await client.ping();
});

Deno.test("release() rejects with LockLostError when the server answers notFound, and fires lost", async () => {
  await using server = new ScriptedServer("notFound");
  await using client = await connect({ port: server.port });
  const lock = await client.lock("a");
  const fired = new Promise((resolve) =>
    lock.lost.addEventListener("abort", resolve, { once: true })
  );
  const error = await lock.release().then(
    () => assert.fail("release() resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof LockLostError, String(error));
  assert.equal(error.reason, "not_held");
  assert.equal(
    error.message,
    'Lost lock "a": the server no longer held it when it was released',
  );
  await deadline(fired, 5000, "the lost signal");
  assert.equal(lock.lost.reason, error);
  assert.equal(lock.held, false);
  assert.equal(await lock.release().catch((again) => again), error);
  // The connection is not at fault: it stays open for other locks.
  await client.ping();
  assert.equal(client.signal.aborted, false);
});

Deno.test("release() rejects with the forced release when the server announced it instead of answering", async () => {
  await using server = new ScriptedServer("forced");
  await using client = await connect({ port: server.port });
  const lock = await client.lock("a");
  const error = await lock.release().then(
    () => assert.fail("release() resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof LockLostError, String(error));
  assert.equal(error.reason, "forced_release");
  assert.equal(error.message, 'Lost lock "a": an operator forced its release');
  assert.equal(lock.lost.reason, error);
});

Deno.test("release() resolves when the connection closes without a word before the reply: the close released the lock", async () => {
  await using server = new ScriptedServer("close");
  await using client = await connect({ port: server.port });
  const lock = await client.lock("a");
  await lock.release();
  assert.equal(lock.lost.aborted, false);
  await deadline(client.closed, 5000, "the close");
});

Deno.test("run exits 6 and says why when its release finds the lock lost", async (t) => {
  const cases = [
    ["notFound", "the server no longer held it when it was released"],
    ["forced", "an operator forced its release"],
  ] as const;
  for (const [onRelease, why] of cases) {
    await t.step(onRelease, async () => {
      await using server = new ScriptedServer(onRelease);
      const result = await runCli(
        ["run", "job", "-p", String(server.port), "--", "echo", "ran"],
      );
      assert.equal(result.code, 6, result.stderr);
      assert.equal(result.stdout, "ran\n");
      assert.equal(result.stderr, `pklock: Lost lock "job": ${why}\n`);
    });
  }
});
