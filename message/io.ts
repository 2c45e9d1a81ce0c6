/**
 * Small I/O helpers shared by the message layer, the server, the client, the
 * CLI and the tooling: writing a whole buffer, and waiting that an abort can
 * end early.
 *
 * @module
 */

/** Something bytes can be written to, a part at a time (a socket, a file). */
export interface Writer {
  /** Writes some of `bytes`; resolves with how many were written. */
  write(bytes: Uint8Array): Promise<number>;
}

/** Something bytes can be written to synchronously (a file, stderr). */
export interface SyncWriter {
  /** Writes some of `bytes`; returns how many were written. */
  writeSync(bytes: Uint8Array): number;
}

/**
 * Writes every byte of `bytes`, however many calls it takes.
 *
 * @param writer Where to write.
 * @param bytes What to write.
 * @throws Whatever `writer.write` throws.
 */
export async function writeAll(
  writer: Writer,
  bytes: Uint8Array,
): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    written += await writer.write(bytes.subarray(written));
  }
}

/**
 * Writes every byte of `bytes` synchronously, however many calls it takes.
 *
 * @param writer Where to write.
 * @param bytes What to write.
 * @throws Whatever `writer.writeSync` throws.
 */
export function writeAllSync(writer: SyncWriter, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) {
    written += writer.writeSync(bytes.subarray(written));
  }
}

/**
 * Waits `ms` milliseconds, or less if `signal` aborts first.
 *
 * @param ms How long to wait.
 * @param signal Ends the wait early.
 * @returns `true` when `signal` ended the wait, `false` when the time ran out.
 */
export function delay(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish(false), ms);
    function finish(aborted: boolean) {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      resolve(aborted);
    }
    function onAbort() {
      finish(true);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
