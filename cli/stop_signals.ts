/**
 * The signals that stop a client subcommand, caught from its first moment so
 * that every phase (connect, TLS, `hello`, waiting, holding) ends on one,
 * whatever the server does.
 *
 * @module
 */

import { delay } from "../message/io.ts";

/** How long to wait for a raised signal's default action to end us. */
const RAISE_GRACE_MS = 1000;

/** Signal numbers on this system, for the 128 + n exit code. */
const NUMBERS: Readonly<Partial<Record<Deno.Signal, number>>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: Deno.build.os === "darwin" ? 30 : 10,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGABRT: 6,
  SIGUSR2: Deno.build.os === "darwin" ? 31 : 12,
};

/**
 * A signal's number on this system.
 *
 * @param signal The signal.
 * @returns Its number, or 0 for one this module does not know.
 */
export function signalNumber(signal: Deno.Signal): number {
  return NUMBERS[signal] ?? 0;
}

/** The signals every client subcommand stops on. */
export const STOP_SIGNALS: readonly Deno.Signal[] = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGTERM",
];

/**
 * Catches signals for as long as it lives. The first one aborts
 * {@linkcode StopSignals.signal}; after {@linkcode StopSignals.redirect},
 * each one goes to a handler instead (`run` passes them on to its command).
 */
export class StopSignals implements Disposable {
  readonly #controller = new AbortController();
  readonly #listeners: [Deno.Signal, () => void][];
  #disposed = false;
  #received: Deno.Signal | undefined;
  #handler: ((signal: Deno.Signal) => void) | undefined;

  /** @param signals Which signals to catch. */
  constructor(signals: readonly Deno.Signal[] = STOP_SIGNALS) {
    this.#listeners = signals.map((signal) => {
      const listener = () => this.#caught(signal);
      Deno.addSignalListener(signal, listener);
      return [signal, listener];
    });
  }

  /** Aborted by the first signal caught before a redirect. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The first signal caught before a redirect. */
  get received(): Deno.Signal | undefined {
    return this.#received;
  }

  /** The exit code (128 + the signal's number) once a signal stopped us. */
  get code(): number | undefined {
    return this.#received === undefined
      ? undefined
      : 128 + signalNumber(this.#received);
  }

  /**
   * Sends every signal caught from now on to `handler` instead.
   *
   * @param handler Called with each signal's name.
   */
  redirect(handler: (signal: Deno.Signal) => void): void {
    this.#handler = handler;
  }

  /**
   * Waits for `promise`, or rejects with the reason of `until` if it aborts
   * first: a bound on this process's clock that no silent server can stretch.
   *
   * @param promise What to wait for.
   * @param until Ends the wait; by default, this object's signal.
   * @returns The promise's value.
   */
  race<T>(promise: Promise<T>, until: AbortSignal = this.signal): Promise<T> {
    if (until.aborted) return Promise.reject(until.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(until.reason);
      until.addEventListener("abort", onAbort, { once: true });
      promise.then(resolve, reject).finally(() =>
        until.removeEventListener("abort", onAbort)
      );
    });
  }

  /** Stops catching the signals. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const [signal, listener] of this.#listeners) {
      Deno.removeSignalListener(signal, listener);
    }
  }

  /**
   * Records that the command died of `signal`, so that this process dies of
   * it too (see {@linkcode StopSignals.dieOf}).
   *
   * @param signal The signal that killed the command.
   */
  died(signal: Deno.Signal): void {
    this.#received ??= signal;
  }

  /**
   * Ends this process by `signal`, as its default action would, once the
   * caller has cleaned up: a shell loop around pklock then stops on Ctrl-C as
   * it stops around flock(1). Stops catching signals first.
   *
   * @param signal The signal to die of.
   * @returns 128 + its number, for the rare signal this process cannot die
   *   of (one it ignores, such as SIGPIPE or SIGUSR1).
   */
  async dieOf(signal: Deno.Signal): Promise<number> {
    this[Symbol.dispose]();
    try {
      Deno.kill(Deno.pid, signal);
    } catch {
      return 128 + signalNumber(signal);
    }
    // The runtime applies the default action on its signal thread.
    await delay(RAISE_GRACE_MS);
    return 128 + signalNumber(signal);
  }

  #caught(signal: Deno.Signal): void {
    if (this.#handler !== undefined) return this.#handler(signal);
    this.#received ??= signal;
    this.#controller.abort(new Error(`Stopped by ${signal}`));
  }
}
