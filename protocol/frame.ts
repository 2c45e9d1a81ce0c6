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
  readonly #header = new Uint8Array(HEADER_BYTES);
  #headerFill = 0;
  #body: Uint8Array | null = null;
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
    return this.#headerFill > 0 || this.#body !== null;
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
      let body = this.#body;
      if (body === null) {
        let length: number;
        if (this.#headerFill === 0 && end - at >= HEADER_BYTES) {
          length = readLength(chunk, at);
          at += HEADER_BYTES;
        } else {
          while (this.#headerFill < HEADER_BYTES && at < end) {
            this.#header[this.#headerFill++] = chunk[at++]!;
          }
          if (this.#headerFill < HEADER_BYTES) return;
          this.#headerFill = 0;
          length = readLength(this.#header, 0);
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
        body = this.#body = new Uint8Array(length);
        this.#bodyFill = 0;
      }
      const take = Math.min(body.length - this.#bodyFill, end - at);
      body.set(chunk.subarray(at, at + take), this.#bodyFill);
      this.#bodyFill += take;
      at += take;
      if (this.#bodyFill === body.length) {
        this.#body = null;
        this.#onFrame(body);
      }
    }
  }
}

function readLength(bytes: Uint8Array, at: number): number {
  return bytes[at]! * 0x1000000 + (bytes[at + 1]! << 16) +
    (bytes[at + 2]! << 8) + bytes[at + 3]!;
}

/**
 * Collects outgoing frames into one buffer so that all frames sent in the same
 * tick leave in a single write. Two buffers alternate: the one handed out by
 * {@linkcode FrameEncoder.take} stays untouched until the next `take`.
 *
 * @example Coalescing two frames
 * ```ts
 * import { FrameEncoder } from "./frame.ts";
 * const out = new FrameEncoder();
 * out.append({ id: 1, result: { status: "ok" } });
 * out.append({ id: 2, result: { status: "ok" } });
 * const bytes = out.take();
 * console.assert(bytes.length === out.taken && out.length === 0);
 * ```
 */
export class FrameEncoder {
  #filling: Uint8Array;
  #spare: Uint8Array;
  #length = 0;
  #taken = 0;

  /** @param initialBytes The starting size of each of the two buffers. */
  constructor(initialBytes = 256) {
    this.#filling = new Uint8Array(initialBytes);
    this.#spare = new Uint8Array(initialBytes);
  }

  /** Bytes appended since the last {@linkcode FrameEncoder.take}. */
  get length(): number {
    return this.#length;
  }

  /** Size of the view the last {@linkcode FrameEncoder.take} returned. */
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
    this.#reserve(start + HEADER_BYTES + json.length * 3);
    const { written } = encoder.encodeInto(
      json,
      this.#filling.subarray(start + HEADER_BYTES),
    );
    const buffer = this.#filling;
    buffer[start] = written >>> 24;
    buffer[start + 1] = (written >>> 16) & 0xff;
    buffer[start + 2] = (written >>> 8) & 0xff;
    buffer[start + 3] = written & 0xff;
    this.#length = start + HEADER_BYTES + written;
    return HEADER_BYTES + written;
  }

  /**
   * Hands out every byte appended so far and starts a new batch.
   *
   * @returns A view that stays valid until the next call.
   */
  take(): Uint8Array {
    const full = this.#filling;
    const bytes = full.subarray(0, this.#length);
    this.#filling = this.#spare;
    this.#spare = full;
    this.#taken = this.#length;
    this.#length = 0;
    return bytes;
  }

  #reserve(size: number): void {
    if (size <= this.#filling.length) return;
    // From 0 (`new FrameEncoder(0)`) doubling alone would never get anywhere.
    let capacity = Math.max(this.#filling.length * 2, 1);
    while (capacity < size) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.#filling.subarray(0, this.#length));
    this.#filling = grown;
  }
}
