/**
 * The wire codec: every message is a 4-byte big-endian unsigned length followed
 * by that many bytes of UTF-8 JSON. This module knows nothing of sockets or
 * locks; it turns bytes into messages and messages into bytes.
 *
 * @module
 */

import { FrameError } from "./errors.ts";

/** A decoded message: always a JSON object. */
export type Message = Record<string, unknown>;

/** Size of the length prefix in front of every frame, in bytes. */
export const HEADER_BYTES = 4;

/** The default largest payload accepted, in bytes (64 KiB). */
export const DEFAULT_MAX_FRAME_BYTES = 65_536;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const NOTHING = new Uint8Array(0);

/**
 * Encodes one message as a complete frame in a new buffer.
 *
 * @param message Any value `JSON.stringify` accepts; messages are objects.
 * @returns The length prefix followed by the UTF-8 JSON payload.
 *
 * @example Encoding a legacy lock request
 * ```ts
 * import { encodeFrame } from "./frame.ts";
 * const bytes = encodeFrame({ command: "lock", parameters: { lockName: "a" }, id: 1 });
 * console.assert(new DataView(bytes.buffer).getUint32(0) === bytes.length - 4);
 * ```
 */
export function encodeFrame(message: unknown): Uint8Array {
  const payload = encoder.encode(JSON.stringify(message));
  const frame = new Uint8Array(HEADER_BYTES + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length);
  frame.set(payload, HEADER_BYTES);
  return frame;
}

/**
 * Parses one frame's payload into a message.
 *
 * @param payload The bytes after the length prefix.
 * @returns The JSON object the payload holds.
 * @throws {FrameError} `invalid_utf8`, `invalid_json` or `not_an_object`.
 *
 * @example Decoding a payload
 * ```ts
 * import { decodeMessage } from "./frame.ts";
 * const message = decodeMessage(new TextEncoder().encode('{"command":"hello"}'));
 * console.assert(message.command === "hello");
 * ```
 */
export function decodeMessage(payload: Uint8Array): Message {
  let text: string;
  try {
    // The lenient decoder is several times faster; invalid bytes turn into
    // U+FFFD, and only then does the strict one tell them from a real U+FFFD.
    text = decoder.decode(payload);
    if (text.includes("\uFFFD")) strictDecoder.decode(payload);
  } catch (cause) {
    throw new FrameError("invalid_utf8", "Frame is not valid UTF-8", { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new FrameError("invalid_json", "Frame is not valid JSON", { cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FrameError("not_an_object", "Frame is not a JSON object");
  }
  return value as Message;
}

/** Options of {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /**
   * The largest payload accepted, in bytes; a longer length prefix is an error.
   *
   * @default {65536}
   */
  maxFrameBytes?: number;
}

/**
 * A byte-level state machine that cuts a stream into frames, whatever way the
 * stream was split into reads: a frame may span many chunks and a chunk may
 * hold many frames.
 *
 * @example Frames split across reads
 * ```ts
 * import { encodeFrame, FrameDecoder } from "./frame.ts";
 * const payloads: number[] = [];
 * const decoder = new FrameDecoder((payload) => payloads.push(payload.length));
 * const bytes = encodeFrame({ a: 1 });
 * decoder.push(bytes.subarray(0, 3));
 * decoder.push(bytes.subarray(3));
 * console.assert(payloads[0] === 7);
 * ```
 */
export class FrameDecoder {
  readonly #onFrame: (payload: Uint8Array) => void;
  readonly #maxFrameBytes: number;
  /** The length prefix read so far, when a chunk ended inside it. */
  #header = 0;
  #headerFill = 0;
  /** The announced length of the unfinished frame's body; -1 between frames. */
  #bodyLength = -1;
  /**
   * The body bytes received so far, in a buffer that grows as they arrive: a
   * peer that sends only a length prefix costs nothing for the body it
   * announced.
   */
  #body: Uint8Array = NOTHING;
  #bodyFill = 0;

  /**
   * Creates a decoder that calls `onFrame` for each complete frame.

   *
   * @param onFrame Called with each complete payload. The view is only valid
   *   during the call: copy it to keep it.
   * @param options Limits.
   */
  constructor(
    onFrame: (payload: Uint8Array) => void,
    options: FrameDecoderOptions = {},
  ) {
    this.#onFrame = onFrame;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  /** Whether a frame has been started but not finished. */
  get partial(): boolean {
    return this.#headerFill > 0 || this.#bodyLength >= 0;
  }

  /**
   * The bytes the decoder holds for an unfinished frame: at most about twice
   * the body bytes received, whatever length its prefix announced.
   */
  get buffered(): number {
    return this.#body.length;
  }

  /**
   * Feeds the next bytes of the stream.
   *
   * @param chunk The bytes read; not kept after the call returns.
   * @throws {FrameError} `frame_too_large` when a length prefix exceeds the
   *   limit; the decoder must not be used afterwards.
   */
  push(chunk: Uint8Array): void {
    const end = chunk.length;
    let at = 0;
    while (at < end) {
      if (this.#bodyLength < 0) {
        let length: number;
        if (this.#headerFill === 0 && end - at >= HEADER_BYTES) {
          length = readLength(chunk, at);
          at += HEADER_BYTES;
        } else {
          while (this.#headerFill < HEADER_BYTES && at < end) {
            this.#header = this.#header * 256 + chunk[at++]!;
            this.#headerFill++;
          }
          if (this.#headerFill < HEADER_BYTES) return;
          length = this.#header;
          this.#header = 0;
          this.#headerFill = 0;
        }
        if (length > this.#maxFrameBytes) {
          throw new FrameError(
            "frame_too_large",
            `Frame of ${length} bytes exceeds the limit of ${this.#maxFrameBytes} bytes`,
          );
        }
        if (end - at >= length) {
          this.#onFrame(chunk.subarray(at, at + length));
          at += length;
          continue;
        }
        this.#bodyLength = length;
        this.#bodyFill = 0;
      }
      const take = Math.min(this.#bodyLength - this.#bodyFill, end - at);
      const body = this.#grow(this.#bodyFill + take);
      body.set(chunk.subarray(at, at + take), this.#bodyFill);
      this.#bodyFill += take;
      at += take;
      if (this.#bodyFill === this.#bodyLength) {
        this.#body = NOTHING;
        this.#bodyLength = -1;
        // The buffer never grows past the announced length: it is the body.
        this.#onFrame(body);
      }
    }
  }

  /** The body buffer with room for `size` bytes, doubled as it fills. */
  #grow(size: number): Uint8Array {
    const body = this.#body;
    if (size <= body.length) return body;
    const capacity = Math.min(
      this.#bodyLength,
      Math.max(size, body.length * 2, MIN_BODY_BYTES),
    );
    const grown = new Uint8Array(capacity);
    grown.set(body.subarray(0, this.#bodyFill));
    this.#body = grown;
    return grown;
  }
}

/** The smallest body buffer: most frames are a few hundred bytes at most. */
const MIN_BODY_BYTES = 256;

function readLength(bytes: Uint8Array, at: number): number {
  return bytes[at]! * 0x1000000 + (bytes[at + 1]! << 16) +
    (bytes[at + 2]! << 8) + bytes[at + 3]!;
}

/**
 * Byte buffers of one size kept for reuse, so that a busy connection does not
 * allocate a buffer per write and an idle one holds none.
 *
 * @example Reusing a buffer
 * ```ts
 * import { BufferPool } from "./frame.ts";
 * const pool = new BufferPool(64);
 * const buffer = pool.get(10);
 * pool.put(buffer);
 * console.assert(pool.get(64) === buffer);
 * ```
 */
export class BufferPool {
  readonly #free: Uint8Array[] = [];

  /**
   * @param bufferBytes The size of pooled buffers.
   * @param maxFree The most buffers kept while unused.
   */
  constructor(readonly bufferBytes = 1024, readonly maxFree = 128) {}

  /**
   * A buffer of at least `size` bytes: a pooled one when `size` fits in one,
   * else a new one of the next power-of-two multiple of the pooled size.
   *
   * @param size The bytes needed.
   * @returns The buffer; its contents are left over from earlier use.
   */
  get(size: number): Uint8Array {
    const unit = Math.max(this.bufferBytes, 1);
    if (size <= this.bufferBytes) {
      return this.#free.pop() ?? new Uint8Array(this.bufferBytes);
    }
    let capacity = unit * 2;
    while (capacity < size) capacity *= 2;
    return new Uint8Array(capacity);
  }

  /**
   * Gives a buffer back once nothing reads it any more; one of another size is
   * left to the garbage collector.
   *
   * @param buffer A buffer from {@linkcode BufferPool.get}.
   */
  put(buffer: Uint8Array): void {
    if (
      buffer.length === this.bufferBytes && this.#free.length < this.maxFree
    ) {
      this.#free.push(buffer);
    }
  }
}

/** The pool of every {@linkcode FrameEncoder} built without one. */
const sharedPool = new BufferPool();

/**
 * Collects outgoing frames into one buffer so that all frames sent in the same
 * tick leave in a single write. The buffer comes from a {@linkcode BufferPool}
 * when the first frame is appended; the view {@linkcode FrameEncoder.take}
 * hands out stays untouched until the next `take` or
 * {@linkcode FrameEncoder.release}, which gives its buffer back.
 *
 * @example Coalescing two frames
 * ```ts
 * import { FrameEncoder } from "./frame.ts";
 * const out = new FrameEncoder();
 * out.append({ id: 1, result: { status: "ok" } });
 * out.append({ id: 2, result: { status: "ok" } });
 * const bytes = out.take();
 * console.assert(bytes.length === out.taken && out.length === 0);
 * out.release();
 * ```
 */
export class FrameEncoder {
  readonly #pool: BufferPool;
  #filling: Uint8Array | null = null;
  #length = 0;
  #lent: Uint8Array | null = null;
  #taken = 0;

  /** @param pool Where buffers come from and go back to. */
  constructor(pool: BufferPool = sharedPool) {
    this.#pool = pool;
  }

  /** Bytes appended since the last {@linkcode FrameEncoder.take}. */
  get length(): number {
    return this.#length;
  }

  /**
   * Size of the view the last {@linkcode FrameEncoder.take} returned, until
   * {@linkcode FrameEncoder.release}.
   */
  get taken(): number {
    return this.#taken;
  }

  /**
   * Appends one message as a frame.
   *
   * @param message Any value `JSON.stringify` accepts.
   * @returns The size of the frame, in bytes.
   */
  append(message: unknown): number {
    const json = JSON.stringify(message);
    const start = this.#length;
    // UTF-8 needs at most three bytes per UTF-16 code unit.
    const buffer = this.#reserve(start + HEADER_BYTES + json.length * 3);
    const { written } = encoder.encodeInto(
      json,
      buffer.subarray(start + HEADER_BYTES),
    );
    buffer[start] = written >>> 24;
    buffer[start + 1] = (written >>> 16) & 0xff;
    buffer[start + 2] = (written >>> 8) & 0xff;
    buffer[start + 3] = written & 0xff;
    this.#length = start + HEADER_BYTES + written;
    return HEADER_BYTES + written;
  }

  /**
   * Hands out every byte appended so far and starts a new batch; the view of
   * the previous `take` is released.
   *
   * @returns A view that stays valid until the next `take` or `release`.
   */
  take(): Uint8Array {
    this.release();
    const full = this.#filling;
    if (full === null) return NOTHING;
    const bytes = full.subarray(0, this.#length);
    this.#lent = full;
    this.#filling = null;
    this.#taken = this.#length;
    this.#length = 0;
    return bytes;
  }

  /** Gives the buffer behind the last {@linkcode FrameEncoder.take} back. */
  release(): void {
    if (this.#lent !== null) this.#pool.put(this.#lent);
    this.#lent = null;
    this.#taken = 0;
  }

  #reserve(size: number): Uint8Array {
    const filling = this.#filling;
    if (filling !== null && size <= filling.length) return filling;
    const grown = this.#pool.get(size);
    if (filling !== null) {
      grown.set(filling.subarray(0, this.#length));
      this.#pool.put(filling);
    }
    this.#filling = grown;
    return grown;
  }
}
