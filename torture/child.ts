/**
 * Child processes of the torture driver: `deno run` with output collected,
 * and the stop-then-kill sequence that lets the driver log a kill at a point
 * after which the victim can write nothing.
 *
 * @module
 */

import { delay } from "../message/io.ts";

/** How much of a child's standard error to keep for reports. */
const KEEP_STDERR = 8192;

/** Options of {@linkcode Child}. */
export interface ChildOptions {
  /**
   * Keep the child's standard input open until {@linkcode Child.open}: a
   * child that reads it to its end first does nothing before then.
   *
   * @default {false}
   */
  gated?: boolean;
}

/** A `deno run` child process. */
export class Child {
  readonly #process: Deno.ChildProcess;
  /** Resolves once the process has exited and its output is read. */
  readonly done: Promise<Deno.CommandStatus>;
  #stdout = "";
  #stderr = "";
  #exited = false;
  #changed = Promise.withResolvers<void>();

  /**
   * Starts `deno run ...args`.
   *
   * @param args The arguments after `deno run`.
   * @param options Whether its standard input is a gate.
   */
  constructor(args: string[], options: ChildOptions = {}) {
    this.#process = new Deno.Command(Deno.execPath(), {
      args: ["run", ...args],
      env: { NO_COLOR: "1" },
      stdin: options.gated ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pumps = [
      this.#pump(this.#process.stdout, (text) => {
        this.#stdout += text;
        this.#changed.resolve();
        this.#changed = Promise.withResolvers();
      }),
      this.#pump(this.#process.stderr, (text) => {
        this.#stderr = (this.#stderr + text).slice(-KEEP_STDERR);
      }),
    ];
    this.done = Promise.all([this.#process.status, ...pumps]).then(
      ([status]) => {
        this.#exited = true;
        this.#changed.resolve();
        return status;
      },
    );
  }

  /**
   * Opens the gate of a `gated` child: closes its standard input. A child
   * that has exited already is left alone.
   */
  open(): void {
    this.#process.stdin.close().catch(() => {});
  }

  /** The process id. */
  get pid(): number {
    return this.#process.pid;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** The end of what it wrote to standard error. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Waits until standard output matches.
   *
   * @param pattern What to wait for.
   * @param ms How long to wait at most.
   * @returns The match, or `null` if the process exited or time ran out.
   */
  async waitForStdout(
    pattern: RegExp,
    ms: number,
  ): Promise<RegExpMatchArray | null> {
    const end = performance.now() + ms;
    while (true) {
      const match = this.#stdout.match(pattern);
      if (match) return match;
      if (this.#exited) return null;
      const left = end - performance.now();
      if (left <= 0) return null;
      // Wake on the next output or the exit, or at the end.
      const changed = new AbortController();
      this.#changed.promise.then(() => changed.abort());
      if (!await delay(left, changed.signal)) return null;
    }
  }

  /**
   * Sends a signal.
   *
   * @param signal The signal.
   * @returns Whether it was sent (false once the process has exited).
   */
  kill(signal: Deno.Signal): boolean {
    try {
      this.#process.kill(signal);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Stops the process with SIGSTOP and waits until every thread has stopped,
   * so that it writes nothing more: a write under way when the signal lands
   * completes first.
   *
   * @returns Whether the stop was seen in /proc (false where there is no
   *   /proc, or if it took over two seconds), or `null` if the process had
   *   exited already.
   */
  async stop(): Promise<boolean | null> {
    if (!this.kill("SIGSTOP")) return null;
    const end = performance.now() + 2000;
    while (performance.now() < end) {
      const state = stoppedState(this.pid);
      if (state === true) return true;
      if (state === null) {
        // No way to see it: give the signal time to land.
        await delay(50);
        return false;
      }
      await delay(1);
    }
    return false;
  }

  async #pump(
    stream: ReadableStream<Uint8Array>,
    sink: (text: string) => void,
  ): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      sink(text);
    }
  }
}

/**
 * Whether every thread of a process is stopped (or gone), from
 * /proc/PID/task/TID/stat.
 *
 * @returns true when stopped or gone, false when a thread still runs, `null`
 *   without /proc: the caller cannot know.
 */
function stoppedState(pid: number): boolean | null {
  let tasks: Deno.DirEntry[];
  try {
    tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
  } catch {
    try {
      Deno.statSync("/proc/self/task");
    } catch {
      return null;
    }
    return true;
  }
  for (const task of tasks) {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
    } catch {
      continue;
    }
    // The state follows the command name, which is in parentheses.
    const state = stat[stat.lastIndexOf(")") + 2];
    if (state !== "T" && state !== "t" && state !== "Z" && state !== "X") {
      return false;
    }
  }
  return true;
}
