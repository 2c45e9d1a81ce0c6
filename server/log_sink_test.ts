import assert from "node:assert/strict";
import { DEFAULT_LOG_QUEUE_BYTES, LogSink } from "./log_sink.ts";

const text = new TextDecoder();

/**
 * A writer that takes bytes only when told to, as a pipe whose reader is
 * away: each write waits for `open()`, and may take fewer bytes than offered.
 */
class GatedWriter {
  readonly writes: string[] = [];
  readonly syncWrites: string[] = [];
  #gate = Promise.withResolvers<void>();
  #asked = Promise.withResolvers<void>();
  pending = 0;

  constructor(readonly maxPerWrite = Infinity) {}

  async write(bytes: Uint8Array): Promise<number> {
    this.pending++;
    this.#asked.resolve();
    await this.#gate.promise;
    this.pending--;
    const taken = Math.min(bytes.length, this.maxPerWrite);
    this.writes.push(text.decode(bytes.subarray(0, taken)));
    return taken;
  }

  writeSync(bytes: Uint8Array): number {
    this.syncWrites.push(text.decode(bytes));
    return bytes.length;
  }

  /** Resolves once a write is waiting. */
  asked(): Promise<void> {
    return this.#asked.promise;
  }

  /** Lets every write through from now on. */
  open(): void {
    this.#gate.resolve();
  }
}

Deno.test({
  name: "LogSink writes the lines of one tick in one write, in order",
  permissions: "none",
  async fn() {
    const writer = new GatedWriter();
    writer.open();
    const sink = new LogSink(writer);
    sink.write("a\n");
    sink.write("b\n");
    sink.write("c\n");
    assert.deepEqual(writer.writes, [], "nothing is written synchronously");
    await sink.flush();
    assert.deepEqual(writer.writes, ["a\nb\nc\n"]);
    assert.equal(sink.queued, 0);
    assert.equal(sink.dropped, 0);
  },
});

Deno.test({
  name: "LogSink finishes a write the writer takes a part at a time",
  permissions: "none",
  async fn() {
    const writer = new GatedWriter(3);
    writer.open();
    const sink = new LogSink(writer);
    sink.write("hello\n");
    sink.write("world\n");
    await sink.flush();
    assert.equal(writer.writes.join(""), "hello\nworld\n");
  },
});

Deno.test({
  name:
    "LogSink never waits for a stuck writer: it queues up to its budget, drops and counts the rest, and reports the count first once the writer takes bytes",
  permissions: "none",
  async fn() {
    const writer = new GatedWriter();
    const sink = new LogSink(writer, {
      maxQueuedBytes: 20,
      formatDropped: (count) => `dropped ${count}\n`,
    });
    sink.write("first\n");
    await writer.asked();
    // "first\n" is in flight and counts against the budget until written.
    for (let i = 0; i < 1_000; i++) sink.write(`line ${i}\n`);
    assert.equal(sink.queued, 6 + 7 + 7);
    assert.equal(sink.dropped, 998);
    writer.open();
    await sink.flush();
    assert.deepEqual(writer.writes, [
      "first\n",
      "dropped 998\nline 0\nline 1\n",
    ]);
    assert.equal(sink.queued, 0);
    // The count is reported once; later lines are written as they come.
    sink.write("after\n");
    await sink.flush();
    assert.equal(writer.writes.at(-1), "after\n");
    assert.equal(sink.dropped, 998);
  },
});

Deno.test({
  name: "LogSink reports a dropped line even when no line follows it",
  permissions: "none",
  async fn() {
    const writer = new GatedWriter();
    writer.open();
    const sink = new LogSink(writer, { maxQueuedBytes: 4 });
    sink.write("longer than the budget\n");
    await sink.flush();
    assert.deepEqual(writer.writes, [
      "Dropped 1 log lines: the log was not read fast enough\n",
    ]);
  },
});

Deno.test({
  name: "LogSink drops every line, without throwing, once its writer fails",
  permissions: "none",
  async fn() {
    let calls = 0;
    const sink = new LogSink({
      write: () => {
        calls++;
        return Promise.reject(new Error("Broken pipe"));
      },
      writeSync: () => {
        throw new Error("Broken pipe");
      },
    });
    sink.write("a\n");
    await sink.flush();
    sink.write("b\n");
    sink.flushSync();
    await sink.flush();
    assert.equal(calls, 1);
    assert.equal(sink.dropped, 1);
    assert.equal(sink.queued, 0);
  },
});

Deno.test({
  name:
    "LogSink.flushSync() writes the queue at once, but never while a write is under way",
  permissions: "none",
  async fn() {
    const writer = new GatedWriter();
    const sink = new LogSink(writer);
    sink.write("exiting\n");
    sink.flushSync();
    assert.deepEqual(writer.syncWrites, ["exiting\n"]);
    await sink.flush();
    assert.deepEqual(writer.writes, [], "the line is not written twice");

    sink.write("in flight\n");
    await writer.asked();
    sink.write("queued\n");
    sink.flushSync();
    assert.deepEqual(writer.syncWrites, ["exiting\n"]);
    writer.open();
    await sink.flush();
    assert.deepEqual(writer.writes, ["in flight\n", "queued\n"]);
  },
});

Deno.test({
  name: "LogSink queues up to 1 MiB by default",
  permissions: "none",
  async fn() {
    assert.equal(DEFAULT_LOG_QUEUE_BYTES, 1_048_576);
    const writer = new GatedWriter();
    const sink = new LogSink(writer);
    const line = "x".repeat(1023) + "\n";
    for (let i = 0; i < 1_100; i++) sink.write(line);
    assert.equal(sink.queued, 1_048_576);
    assert.equal(sink.dropped, 1_100 - 1_024);
    writer.open();
    await sink.flush();
  },
});
