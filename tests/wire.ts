/**
 * Helpers for byte-exact protocol tests over a {@linkcode RawClient}: building
 * frames by hand, and reading replies within a bound.
 *
 * @module
 */

import type { Message } from "../protocol/frame.ts";
import { deadline, type RawClient } from "./helpers.ts";

/**
 * The `code` of an error reply.
 *
 * @param message A reply, or `null` when the server closed the connection.
 * @returns The code, or `undefined` when the message is no error reply.
 */
export function errorCode(message: Message | null): unknown {
  return (message?.error as { code?: unknown } | undefined)?.code;
}

/**
 * The next message from the server, within 5 s.
 *
 * @param raw The connection.
 * @returns The message, or `null` when the server closed the connection.
 */
export function nextOf(raw: RawClient): Promise<Message | null> {
  return deadline(raw.next(), 5000, "the next message or the close");
}

/**
 * Sends a message and returns the next message from the server, within 5 s.
 *
 * @param raw The connection.
 * @param message What to send.
 * @returns The next message, or `null` when the server closed the connection.
 */
export function ask(raw: RawClient, message: unknown): Promise<Message | null> {
  return deadline(
    raw.request(message),
    5000,
    `the reply to ${JSON.stringify(message)}`,
  );
}

/**
 * Concatenates byte arrays.
 *
 * @param parts The arrays, in order.
 * @returns One array holding them all.
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * A 4-byte big-endian length prefix.
 *
 * @param length The length it announces.
 * @returns The prefix's bytes.
 */
export function lengthPrefix(length: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

const encoder = new TextEncoder();

/**
 * A frame whose payload is exactly this text, byte for byte.
 *
 * @param json The payload.
 * @returns The length prefix and the payload.
 */
export function frameOf(json: string): Uint8Array {
  const payload = encoder.encode(json);
  const frame = new Uint8Array(4 + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length);
  frame.set(payload, 4);
  return frame;
}
