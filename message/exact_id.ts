/**
 * Exact RPC ids. `JSON.parse` turns `9007199254740993` into `…992` and `1e400`
 * into `Infinity` (which `JSON.stringify` writes as `null`): a client with
 * 64-bit ids would never see its reply. An id whose value would not print back
 * as it was written is kept as its source text instead, and echoed as such.
 *
 * @module
 */

const decoder = new TextDecoder();
/** `JSON.rawJSON` (V8 11.4), which TypeScript's library does not declare yet. */
const { rawJSON } = JSON as unknown as { rawJSON(text: string): object };

/**
 * Whether an id may have lost its exact value in `JSON.parse`: a number that
 * is not a safe integer, or an object or array (which may hold one).
 *
 * @param id The `id` of a decoded message.
 * @returns `true` when {@linkcode exactId} must read the id again.
 */
export function mayBeInexact(id: unknown): boolean {
  return typeof id === "number"
    ? !Number.isSafeInteger(id)
    : typeof id === "object" && id !== null;
}

/**
 * The `id` of a message, every number in it that would not print back as
 * written replaced by its source text (a `JSON.rawJSON` value), so that
 * `JSON.stringify` writes it byte for byte as the peer did.
 *
 * @param payload The frame's payload: a valid JSON object.
 * @returns The id, exact.
 */
export function exactId(payload: Uint8Array): unknown {
  const message = JSON.parse(
    decoder.decode(payload),
    (_key, value: unknown, context?: { source?: string }) => {
      const source = context?.source;
      return typeof value === "number" && source !== undefined &&
          String(value) !== source
        ? rawJSON(source)
        : value;
    },
  );
  return message.id;
}
