/**
 * The shared log of the torture test: every process appends whole lines with
 * one `write` on a file opened with O_APPEND, which Linux keeps atomic for
 * small writes to a local file, so lines never interleave and the file's order
 * is the order in which the writes happened.
 *
 * @module
 */

import type { LogRecord } from "./check.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Appends records to the log, one `write` each. */
export class LogWriter implements Disposable {
  readonly #file: Deno.FsFile;

  /**
   * Opens the log for appending; it must exist.
   *
   * @param path The log file.
   */
  constructor(path: string) {
    this.#file = Deno.openSync(path, { append: true });
  }

  /**
   * Appends one record as a line, stamped with the time.
   *
   * @param record The record.
   * @throws {Error} When the line was not written in one piece.
   */
  write(record: LogRecord): void {
    const bytes = encoder.encode(
      JSON.stringify({ ...record, t: Date.now() }) + "\n",
    );
    const written = this.#file.writeSync(bytes);
    // A second write could land after another process's line.
    if (written !== bytes.length) {
      throw new Error(
        `Short append to the torture log: ${written} of ${bytes.length} bytes`,
      );
    }
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }

  /** Same as {@linkcode LogWriter.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Reads the lines appended to the log since the last read. */
export class LogTail implements Disposable {
  readonly #file: Deno.FsFile;
  readonly #buffer = new Uint8Array(65536);
  #partial = "";

  /**
   * Opens the log for reading from its start.
   *
   * @param path The log file.
   */
  constructor(path: string) {
    this.#file = Deno.openSync(path, { read: true });
  }

  /**
   * Reads to the current end of the file.
   *
   * @returns The complete lines read, without newlines.
   */
  async read(): Promise<string[]> {
    let text = this.#partial;
    while (true) {
      const n = await this.#file.read(this.#buffer);
      if (n === null) break;
      text += decoder.decode(this.#buffer.subarray(0, n), { stream: true });
    }
    const lines = text.split("\n");
    this.#partial = lines.pop()!;
    return lines;
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }

  /** Same as {@linkcode LogTail.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
