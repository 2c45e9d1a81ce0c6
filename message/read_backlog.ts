/**
 * A connection's reads while its output is over the cap: it stops reading
 * until the peer takes its output, and the frames its last read brought wait
 * here, as requests, not replies, until it resumes. Made only when a
 * connection first pauses: most never do.
 *
 * @module
 */

/** The frames a paused connection read and has not dispatched yet. */
export class ReadBacklog {
  readonly #payloads: Uint8Array[] = [];
  #drained: PromiseWithResolvers<void> | null = null;

  /** Whether reading waits for the output to drain. */
  get paused(): boolean {
    return this.#drained !== null;
  }

  /** Resolves once {@linkcode ReadBacklog.resume} is called, if paused. */
  get resumed(): Promise<void> | undefined {
    return this.#drained?.promise;
  }

  /** The output passed the cap: stop reading. */
  pause(): void {
    this.#drained ??= Promise.withResolvers<void>();
  }

  /** The output was written (or the connection closed): read again. */
  resume(): void {
    this.#drained?.resolve();
    this.#drained = null;
  }

  /**
   * Keeps a frame read while paused, or behind frames still waiting.
   *
   * @param payload The frame's payload; copied, as the read buffer is reused.
   */
  hold(payload: Uint8Array): void {
    this.#payloads.push(payload.slice());
  }

  /**
   * The oldest frame waiting.
   *
   * @returns Its payload, or `undefined` once none waits.
   */
  next(): Uint8Array | undefined {
    return this.#payloads.shift();
  }
}
