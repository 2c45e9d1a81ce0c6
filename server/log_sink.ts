/**
 * A log sink that never blocks its caller: lines queue up to a byte budget
 * and are written asynchronously, so a standard error that nobody reads (a
 * full pipe) costs log lines, never the server's only thread. Lines that do
 * not fit are dropped and counted, and the count is written once the writer
 * takes bytes again.
 *
 * @module
 */

import {
  type SyncWriter,
  writeAll,
  writeAllSync,
  type Writer,
} from "../message/io.ts";

/** The default budget of queued, unwritten log text: 1 MiB. */
export const DEFAULT_LOG_QUEUE_BYTES = 1_048_576;

/** Options of {@linkcode LogSink}. */
export interface LogSinkOptions {
  /**
   * The most bytes queued and not yet written; a line that would pass it is
   * dropped.
   *
   * @default {1048576}
   */
  maxQueuedBytes?: number;
  /**
   * Renders the line that reports `count` dropped lines, written ahead of the
   * next lines once the writer takes bytes again.
   *
   * @default {A plain line of text}
   */
  formatDropped?: (count: number) => string;
}

const encoder = new TextEncoder();

/**
 * Queues log lines and writes them in the background, one batch per write.
 *
 * @example Logging to standard error
 * ```ts ignore
 * const sink = new LogSink(Deno.stderr);
 * sink.write("Listening\n");
 * await sink.flush();
 * ```
 */
export class LogSink {
  readonly #writer: Writer & SyncWriter;
  readonly #maxQueuedBytes: number;
  readonly #formatDropped: (count: number) => string;
  #queue: Uint8Array[] = [];
  /** Bytes queued or being written, not yet taken by the writer. */
  #queued = 0;
  #dropped = 0;
  #droppedTotal = 0;
  /** The background writer, from the first line queued until it is done. */
  #writing: Promise<void> | null = null;
  /** Whether a write has been handed to the writer and has not returned. */
  #inFlight = false;
  /** The writer failed (a closed standard error): lines are dropped. */
  #broken = false;

  /**
   * @param writer Where lines go, e.g. `Deno.stderr`.
   * @param options The budget and the dropped-lines line.
   */
  constructor(writer: Writer & SyncWriter, options: LogSinkOptions = {}) {
    this.#writer = writer;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_LOG_QUEUE_BYTES;
    this.#formatDropped = options.formatDropped ??
      ((count) =>
        `Dropped ${count} log lines: the log was not read fast enough\n`);
  }

  /** Bytes queued and not yet taken by the writer. */
  get queued(): number {
    return this.#queued;
  }

  /** How many lines were dropped so far, in all. */
  get dropped(): number {
    return this.#droppedTotal;
  }

  /**
   * Queues one line; never waits. Lines written in the same tick leave in one
   * write.
   *
   * @param line The text, its line break included.
   */
  write(line: string): void {
    const bytes = encoder.encode(line);
    if (this.#broken || this.#queued + bytes.length > this.#maxQueuedBytes) {
      this.#dropped++;
      this.#droppedTotal++;
      // The count is written with the next batch, even if no line follows.
      if (!this.#broken) this.#writing ??= this.#drain();
      return;
    }
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    this.#writing ??= this.#drain();
  }

  /**
   * Waits until every line queued so far is written (or dropped).
   *
   * @returns When the queue is empty.
   */
  async flush(): Promise<void> {
    while (this.#writing !== null) await this.#writing;
  }

  /**
   * Writes the queue synchronously, before exiting; does nothing while an
   * asynchronous write is under way (the writer is not taking bytes, and
   * lines must not interleave).
   */
  flushSync(): void {
    if (this.#inFlight || this.#broken || this.#queue.length === 0) return;
    try {
      writeAllSync(this.#writer, this.#take());
    } catch {
      this.#broken = true;
    }
    this.#queued = 0;
  }

  async #drain(): Promise<void> {
    // After the current tick, so that a burst of lines is one write.
    await Promise.resolve();
    try {
      while ((this.#queue.length > 0 || this.#dropped > 0) && !this.#broken) {
        // The whole queue goes in one batch: these bytes are the batch's.
        const taken = this.#queued;
        const batch = this.#take();
        this.#inFlight = true;
        await writeAll(this.#writer, batch);
        this.#inFlight = false;
        this.#queued -= taken;
      }
    } catch {
      // Standard error is gone (a closed pipe): losing log lines is better
      // than a server that dies and takes every lock with it.
      this.#broken = true;
      this.#inFlight = false;
      this.#queue = [];
      this.#queued = 0;
    }
    this.#writing = null;
  }

  /** The queue as one buffer, led by the count of lines dropped before it. */
  #take(): Uint8Array {
    const parts = this.#queue;
    this.#queue = [];
    if (this.#dropped > 0) {
      parts.unshift(encoder.encode(this.#formatDropped(this.#dropped)));
      this.#dropped = 0;
    }
    let total = 0;
    for (const part of parts) total += part.length;
    const batch = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      batch.set(part, at);
      at += part.length;
    }
    return batch;
  }
}
