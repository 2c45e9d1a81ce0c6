/**
 * A torture-test client process. It opens one connection and, until SIGTERM,
 * asks for the exclusive lock "torture" again and again: sometimes waiting as
 * long as it takes, sometimes with `wait: 0`, sometimes with a bounded wait.
 * While it holds the lock it appends `start`, a few `work` lines and `end`,
 * each carrying its fencing token, to the shared log; every ask gets an
 * outcome line (`start` or `refused`) unless the connection dies
 * (`disconnected`). It checks `lock.lost` right before every append, and logs
 * `lost` the moment the signal fires, so it never writes as a holder after
 * learning the lock is gone.
 *
 * Usage: `worker.ts --port P --log FILE --gen G --seed S`; it starts once its
 * standard input ends. Exit codes: 0 after SIGTERM, 4 when the connection was
 * lost.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { delay } from "../message/io.ts";
import {
  connect,
  ConnectionError,
  type Lock,
  type LockClient,
  LockTimeoutError,
  RemoteError,
} from "../mod.ts";
import type { WorkerRecord } from "./check.ts";
import { LogWriter } from "./log_file.ts";
import { Random } from "./random.ts";

/** The lock every worker fights over. */
export const LOCK_NAME = "torture";

const EXIT_LOST = 4;

type Outcome = "released" | "lost";

/** One worker's state: its connection, its log and its dice. */
class Worker {
  readonly #client: LockClient;
  readonly #log: LogWriter;
  readonly #random: Random;
  readonly #gen: number;
  #stopping = false;

  constructor(client: LockClient, log: LogWriter, random: Random, gen: number) {
    this.#client = client;
    this.#log = log;
    this.#random = random;
    this.#gen = gen;
  }

  /** Finishes the current round, then stops asking. */
  stop(): void {
    this.#stopping = true;
  }

  /**
   * Asks, holds and releases until stopped or disconnected.
   *
   * @returns The exit code.
   */
  async run(): Promise<number> {
    while (!this.#stopping) {
      const wait = this.#pickWait();
      this.#write(
        wait === undefined ? { event: "ask" } : { event: "ask", wait },
      );
      let lock: Lock;
      try {
        lock = await this.#client.lock(
          LOCK_NAME,
          wait === undefined ? {} : { wait },
        );
      } catch (error) {
        if (error instanceof LockTimeoutError) {
          this.#write({
            event: "refused",
            reason: wait === 0 ? "busy" : "timeout",
          });
        } else if (error instanceof RemoteError) {
          this.#write({ event: "refused", reason: error.code });
        } else if (error instanceof ConnectionError) {
          this.#write({ event: "disconnected", detail: error.message });
          return EXIT_LOST;
        } else {
          throw error;
        }
        await this.#pause();
        continue;
      }
      if (await this.#hold(lock) === "lost") return EXIT_LOST;
      await this.#pause();
    }
    return 0;
  }

  async #hold(lock: Lock): Promise<Outcome> {
    const { token } = lock;
    if (lock.lost.aborted) {
      // Granted, but gone before it could be used: never write as its holder.
      this.#write({ event: "disconnected", detail: "lost on arrival" });
      return "lost";
    }
    // Logged the moment the connection dies, before anything else can run.
    const onLost = () => this.#write({ event: "lost", token });
    lock.lost.addEventListener("abort", onLost, { once: true });
    // Now and then a long hold, so that kills and restarts catch holders.
    const long = this.#random.next() < 0.1;
    this.#write(
      long ? { event: "start", token, long } : { event: "start", token },
    );
    const steps = this.#random.int(1, 3);
    for (let step = 0; step < steps; step++) {
      await delay(long ? this.#random.int(20, 60) : this.#random.int(0, 2));
      if (lock.lost.aborted) return "lost";
      this.#write({ event: "work", token });
    }
    await delay(this.#random.int(0, 2));
    if (lock.lost.aborted) return "lost";
    this.#write({ event: "end", token });
    // From here on the hold is over as far as the log goes.
    lock.lost.removeEventListener("abort", onLost);
    await lock.release();
    return "released";
  }

  /** Unbounded, `wait: 0`, or a bounded wait of up to 200 ms. */
  #pickWait(): number | undefined {
    const dice = this.#random.next();
    if (dice < 0.4) return undefined;
    if (dice < 0.55) return 0;
    return this.#random.int(1, 200);
  }

  async #pause(): Promise<void> {
    await delay(this.#random.int(0, 4));
  }

  #write(
    record:
      | { event: "ask"; wait?: number }
      | { event: "start"; token: number; long?: boolean }
      | { event: "work" | "end" | "lost"; token: number }
      | { event: "refused"; reason: string }
      | { event: "disconnected"; detail?: string },
  ): void {
    this.#log.write(
      { ...record, pid: Deno.pid, gen: this.#gen } as WorkerRecord,
    );
  }
}

function integer(text: string | undefined, name: string): number {
  const value = Number(text);
  if (text === undefined || !Number.isSafeInteger(value)) {
    throw new Error(`worker.ts: --${name} needs an integer, got "${text}"`);
  }
  return value;
}

/**
 * Runs a worker.
 *
 * @param args The command-line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: "string" },
      log: { type: "string" },
      gen: { type: "string" },
      seed: { type: "string" },
    },
  });
  const port = integer(values.port, "port");
  const gen = integer(values.gen, "gen");
  const seed = integer(values.seed, "seed");
  if (values.log === undefined) throw new Error("worker.ts: --log is needed");

  // Registered first, so SIGTERM never kills the worker half-way.
  let worker: Worker | undefined;
  let stopped = false;
  const onTerm = () => {
    stopped = true;
    worker?.stop();
  };
  Deno.addSignalListener("SIGTERM", onTerm);
  // An orphan (the driver died) must not run on forever.
  const parent = Deno.ppid;
  const watchdog = setInterval(() => {
    if (Deno.ppid !== parent) Deno.exit(0);
  }, 250);
  Deno.unrefTimer(watchdog);

  // The driver closes standard input once it has logged this worker's
  // `spawn`: a line of ours before that would be cleared by it.
  const gate = Deno.stdin.readable.pipeTo(new WritableStream());
  using log = new LogWriter(values.log);
  let client: LockClient;
  try {
    client = await connect({ port, signal: AbortSignal.timeout(10_000) });
  } catch (error) {
    // No ask was made: nothing to log. The driver sees the exit code.
    console.error(`worker: cannot connect: ${(error as Error).message}`);
    return EXIT_LOST;
  }
  try {
    await gate;
    worker = new Worker(client, log, new Random(seed), gen);
    if (stopped) worker.stop();
    return await worker.run();
  } finally {
    Deno.removeSignalListener("SIGTERM", onTerm);
    clearInterval(watchdog);
    await client.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
