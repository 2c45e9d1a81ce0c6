/**
 * What every benchmark client implements, and the buffered reader the raw
 * clients share.
 *
 * @module
 */

/**
 * One lock user: one TCP connection bound to one lock name, one request in
 * flight at a time.
 */
export interface BenchClient {
  /** Takes the lock, waiting as long as it takes; resolves once granted. */
  lock(): Promise<void>;
  /** Releases the lock; resolves once the server confirmed. */
  release(): Promise<void>;
  /**
   * One round trip on the connection, made while holding the lock: the
   * "work" of a verified hold (see driver.ts), during which any grant to
   * another client would be seen.
   */
  touch(): Promise<void>;
  /** Drops the connection at once, as a crashing process would. */
  close(): void;
  /** The fencing token of the last grant, where the server issues one. */
  readonly token?: number;
}

const decoder = new TextDecoder();

/** The peer closed the connection while a reply was awaited. */
export class ClosedError extends Error {
  override name = "ClosedError";
}

/**
 * A growable read buffer over a socket: it reads until a whole frame (4-byte
 * big-endian length prefix) or a whole line (`\r\n`) is buffered, and exposes
 * it as a view without copying.
 */
export class ByteReader {
  readonly #conn: Deno.Conn;
  #buffer = new Uint8Array(4096);
  #start = 0;
  #end = 0;

  /** @param conn The socket read from. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /**
   * Waits until a whole frame is buffered.
   *
   * @returns The frame's payload length.
   * @throws {ClosedError} When the peer closes first.
   */
  async frame(): Promise<number> {
    while (this.#end - this.#start < 4) await this.#fill();
    const b = this.#buffer;
    const s = this.#start;
    const length = b[s]! * 0x1000000 + (b[s + 1]! << 16) + (b[s + 2]! << 8) +
      b[s + 3]!;
    while (this.#end - this.#start < 4 + length) await this.#fill();
    return length;
  }

  /** The buffered frame's payload; valid until the next read. */
  view(length: number): Uint8Array {
    const at = this.#start + 4;
    return this.#buffer.subarray(at, at + length);
  }

  /** The buffered frame's payload as text, for error messages. */
  text(length: number): string {
    return decoder.decode(this.view(length));
  }

  /** Drops the buffered frame. */
  consume(length: number): void {
    this.#skip(4 + length);
  }

  /**
   * Waits until a whole `\r\n`-terminated line is buffered.
   *
   * @returns The line's length, without `\r\n`.
   * @throws {ClosedError} When the peer closes first.
   */
  async line(): Promise<number> {
    // Offset, from the start of the buffered data, where the search resumes.
    let from = 0;
    while (true) {
      const b = this.#buffer;
      const start = this.#start;
      for (let i = start + from; i + 1 < this.#end; i++) {
        if (b[i] === 13 && b[i + 1] === 10) return i - start;
      }
      from = Math.max(0, this.#end - start - 1);
      await this.#fill();
    }
  }

  /**
   * Waits until a whole PostgreSQL backend message (a type byte, then a
   * 4-byte length that counts itself) is buffered.
   *
   * @returns The body's length.
   * @throws {ClosedError} When the peer closes first.
   */
  async message(): Promise<number> {
    while (this.#end - this.#start < 5) await this.#fill();
    const b = this.#buffer;
    const s = this.#start + 1;
    const length = b[s]! * 0x1000000 + (b[s + 1]! << 16) + (b[s + 2]! << 8) +
      b[s + 3]! - 4;
    while (this.#end - this.#start < 5 + length) await this.#fill();
    return length;
  }

  /** The buffered PostgreSQL message's body; valid until the next read. */
  body(length: number): Uint8Array {
    const at = this.#start + 5;
    return this.#buffer.subarray(at, at + length);
  }

  /** Drops the buffered PostgreSQL message. */
  consumeMessage(length: number): void {
    this.#skip(5 + length);
  }

  /** The first byte of what is buffered. */
  first(): number {
    return this.#buffer[this.#start]!;
  }

  /** The buffered line as text, for error messages. */
  lineText(length: number): string {
    return decoder.decode(
      this.#buffer.subarray(this.#start, this.#start + length),
    );
  }

  /** Drops the buffered line and its `\r\n`. */
  consumeLine(length: number): void {
    this.#skip(length + 2);
  }

  #skip(bytes: number): void {
    this.#start += bytes;
    if (this.#start >= this.#end) this.#start = this.#end = 0;
  }

  async #fill(): Promise<void> {
    if (this.#end === this.#buffer.length) {
      const used = this.#end - this.#start;
      if (used * 2 > this.#buffer.length) {
        const grown = new Uint8Array(this.#buffer.length * 2);
        grown.set(this.#buffer.subarray(this.#start, this.#end));
        this.#buffer = grown;
      } else {
        this.#buffer.copyWithin(0, this.#start, this.#end);
      }
      this.#start = 0;
      this.#end = used;
    }
    const n = await this.#conn.read(this.#buffer.subarray(this.#end));
    if (n === null) throw new ClosedError("Connection closed by the server");
    this.#end += n;
  }
}

/**
 * Where a byte pattern first occurs.
 *
 * @param bytes Where to look.
 * @param pattern What to look for.
 * @param from The first index tried.
 * @returns The index, or -1.
 */
export function indexOf(
  bytes: Uint8Array,
  pattern: Uint8Array,
  from = 0,
): number {
  const first = pattern[0];
  const last = bytes.length - pattern.length;
  outer: for (let i = from; i <= last; i++) {
    if (bytes[i] !== first) continue;
    for (let j = 1; j < pattern.length; j++) {
      if (bytes[i + j] !== pattern[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/**
 * Whether two byte arrays hold the same bytes.
 *
 * @param a One array.
 * @param b The other.
 * @returns `true` when equal.
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
