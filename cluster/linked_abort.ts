/**
 * An abort signal that follows several others, for calls and long-lived
 * loops. Not `AbortSignal.any()`: its result is held by its sources only
 * weakly, and an abort algorithm such as `fetch`'s does not keep it alive, so
 * after a garbage collection aborting a source may no longer reach a request
 * that waits on it (denoland/deno#29075). Here the sources' listeners hold
 * the controller strongly, until {@linkcode LinkedAbort} is disposed.
 *
 * @module
 */

/** An `AbortController` that also aborts when any linked signal does. */
export class LinkedAbort implements Disposable {
  readonly #controller = new AbortController();
  readonly #unlink: (() => void)[] = [];

  /** @param signals The signals to follow; `undefined` ones are skipped. */
  constructor(...signals: (AbortSignal | undefined)[]) {
    for (const source of signals) {
      if (!source) continue;
      if (source.aborted) {
        this.#controller.abort(source.reason);
        break;
      }
      const follow = () => this.#controller.abort(source.reason);
      source.addEventListener("abort", follow, { once: true });
      this.#unlink.push(() => source.removeEventListener("abort", follow));
    }
  }

  /** Aborts when `abort()` is called or any linked signal aborts. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /**
   * Aborts the signal.
   *
   * @param reason Why.
   */
  abort(reason?: unknown): void {
    this.#controller.abort(reason);
  }

  /** Stops following the linked signals. */
  [Symbol.dispose](): void {
    for (const unlink of this.#unlink.splice(0)) unlink();
  }
}
