/**
 * Test helpers: in-process and child-process servers on port 0, a raw framed
 * socket for byte-exact protocol tests, and CLI runners.
 *
 * @module
 */

import { connect, type LockClient } from "../mod.ts";
import { writeAll } from "../message/io.ts";
import { encodeFrame, FrameDecoder, type Message } from "../protocol/frame.ts";
import { LockServer } from "../server/lock_server.ts";
import type { LockServerOptions } from "../server/lock_server_options.ts";

/** The repository's root folder. */
export const ROOT: string = new URL("../", import.meta.url).pathname;

/** The CLI entry point. */
export const MAIN: string = new URL("../main.ts", import.meta.url).pathname;

/**
 * The `--v8-flags=...` arguments of one of deno.json's tasks.
 *
 * @param task The task's name.
 * @returns Its V8 flag arguments, in order.
 */
export async function taskV8Flags(task: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const command: string = config.tasks[task];
  return command.split(/\s+/).filter((arg) => arg.startsWith("--v8-flags="));
}

/**
 * Starts a lock server in this process on a free port.
 *
 * @param options Server options; the port defaults to 0.
 * @returns The server; dispose of it with `await using`.
 */
export function startServer(options: LockServerOptions = {}): LockServer {
  return new LockServer({ port: 0, ...options });
}

/**
 * A socket that speaks frames but knows nothing else: tests build every
 * message by hand and read every reply as it comes.
 */
export class RawClient implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #frames: Message[] = [];
  readonly #waiting: Array<(message: Message | null) => void> = [];
  readonly #decoder: FrameDecoder;
  readonly #reading: Promise<void>;
  #ended = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#decoder = new FrameDecoder((payload) => {
      const message = JSON.parse(new TextDecoder().decode(payload));
      const waiter = this.#waiting.shift();
      if (waiter) waiter(message);
      else this.#frames.push(message);
    }, { maxFrameBytes: 64 * 1024 * 1024 });
    this.#reading = this.#read();
  }

  /**
   * Connects to a port on 127.0.0.1.
   *
   * @param port The server's port.
   * @returns The connected client.
   */
  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends one message as a frame. */
  async send(message: unknown): Promise<void> {
    await this.write(encodeFrame(message));
  }

  /** Sends raw bytes. */
  async write(bytes: Uint8Array): Promise<void> {
    await writeAll(this.#conn, bytes);
  }

  /**
   * The next message from the server.
   *
   * @returns The message, or `null` when the server closed the connection.
   */
  next(): Promise<Message | null> {
    const frame = this.#frames.shift();
    if (frame !== undefined) return Promise.resolve(frame);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Sends a request and returns the next message (the caller checks it). */
  async request(message: unknown): Promise<Message | null> {
    await this.send(message);
    return await this.next();
  }

  /** Resolves when the server has closed the connection. */
  async ended(): Promise<void> {
    await this.#reading;
  }

  /**
   * Half-closes the socket: the server reads everything sent so far, then end
   * of stream, while replies can still be read.
   */
  async closeWrite(): Promise<void> {
    await this.#conn.closeWrite();
  }

  /** Closes the socket. */
  async close(): Promise<void> {
    if (!this.#ended) {
      try {
        this.#conn.close();
      } catch {
        // Closed already.
      }
    }
    await this.#reading;
  }

  /** Same as {@linkcode RawClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.#decoder.push(buffer.subarray(0, n));
      }
    } catch {
      // Reset by the server, or closed by this side.
    }
    if (!this.#ended) {
      this.#ended = true;
      try {
        this.#conn.close();
      } catch {
        // Closed already.
      }
    }
    for (const waiter of this.#waiting.splice(0)) waiter(null);
  }
}

/** How long {@linkcode DenoProcess.waitFor} waits before failing the test. */
const WAIT_FOR_MS = 30_000;

/** A child Deno process, with its output collected. */
export class DenoProcess implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #output = { stdout: new Output(), stderr: new Output() };
  readonly #done: Promise<{ code: number; stdout: string; stderr: string }>;

  /**
   * Starts `deno run --allow-all script ...args`.
   *
   * @param script The module to run.
   * @param args Its arguments.
   * @param env Extra environment variables.
   * @param scratch A folder to remove once the process has exited.
   */
  constructor(
    script: string,
    args: string[],
    env: Record<string, string> = {},
    scratch?: string,
  ) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", script, ...args],
      cwd: ROOT,
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pumps = [
      this.#output.stdout.pump(this.#child.stdout),
      this.#output.stderr.pump(this.#child.stderr),
    ];
    this.#done = Promise.all([this.#child.status, ...pumps]).then(
      async ([status]) => {
        if (scratch) await Deno.remove(scratch, { recursive: true });
        return {
          code: status.code,
          stdout: this.#output.stdout.text,
          stderr: this.#output.stderr.text,
        };
      },
    );
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Waits until the output, past what earlier calls matched, matches.
   *
   * @param pattern What to wait for.
   * @param stream Which output to watch.
   * @returns The match.
   * @throws {Error} When the process ends first.
   */
  async waitFor(
    pattern: RegExp,
    stream: "stdout" | "stderr" = "stdout",
  ): Promise<RegExpMatchArray> {
    const match = await deadline(
      this.#output[stream].waitFor(pattern),
      WAIT_FOR_MS,
      `${pattern} on ${stream}; so far: ${this.#output[stream].text}`,
    );
    if (match !== null) return match;
    const { stdout, stderr } = await this.#done;
    throw new Error(
      `Process ended before printing ${pattern} on ${stream}\nstdout: ${stdout}\nstderr: ${stderr}`,
    );
  }

  /** Sends a signal. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.#child.kill(signal);
    } catch {
      // Exited already.
    }
  }

  /**
   * Waits for the process to exit.
   *
   * @returns Its exit code and everything it printed.
   */
  result(): Promise<{ code: number; stdout: string; stderr: string }> {
    return this.#done;
  }

  /** Kills the process if it still runs and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.#done;
  }
}

/** One output stream of a child process, kept as text and watched. */
class Output {
  text = "";
  #matched = 0;
  #ended = false;
  #changed = Promise.withResolvers<void>();

  async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      this.text += chunk;
      this.#changed.resolve();
      this.#changed = Promise.withResolvers();
    }
    this.#ended = true;
    this.#changed.resolve();
  }

  async waitFor(pattern: RegExp): Promise<RegExpMatchArray | null> {
    while (true) {
      const match = this.text.slice(this.#matched).match(pattern);
      if (match) {
        this.#matched += match.index! + match[0].length;
        return match;
      }
      if (this.#ended) return null;
      await this.#changed.promise;
    }
  }
}

/**
 * Starts `pklock serve --port 0` as a child process and waits until it listens.
 *
 * @param args Further arguments of `pklock serve`.
 * @returns The process and its port.
 */
export async function spawnServer(
  args: string[] = [],
): Promise<{ process: DenoProcess; port: number }> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-test-" });
  const process = new DenoProcess(
    MAIN,
    ["serve", "--port", "0", "--state-file", `${dir}/state.json`, ...args],
    {},
    dir,
  );
  const match = await process.waitFor(/listening on .*:(\d+)\n/);
  return { process, port: Number(match[1]) };
}

/**
 * Runs `pklock ...args` to completion.
 *
 * @param args The arguments of `pklock`.
 * @param env Extra environment variables.
 * @returns Its exit code and output.
 */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return cli(args, env).result();
}

/**
 * Starts `pklock ...args` (main.ts) as a child process.
 *
 * @param args The arguments of `pklock`.
 * @param env Extra environment variables.
 * @returns The running process.
 */
export function cli(
  args: string[],
  env: Record<string, string> = {},
): DenoProcess {
  return new DenoProcess(MAIN, args, env);
}

/**
 * Starts a child process that takes a lock through the client library, prints
 * `held TOKEN` and holds it until killed.
 *
 * @param port The server's port.
 * @param name The lock's name.
 * @returns The running process.
 */
export function spawnHolder(port: number, name: string): DenoProcess {
  return new DenoProcess(
    new URL("./fixtures/hold_lock.ts", import.meta.url).pathname,
    [String(port), name],
  );
}

/**
 * Fails a test that would otherwise hang: rejects if `promise` has not settled
 * within `ms`. A bound on a wait, not a sleep.
 *
 * @param promise What the test awaits.
 * @param ms The bound, in milliseconds.
 * @param what What is awaited, for the message.
 * @returns The promise's value.
 */
export async function deadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `body` with a fresh temporary folder, removed afterwards.
 *
 * @param body What to run; it gets the folder's path.
 * @returns What `body` returns.
 */
export async function inTempDir<T>(
  body: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-test-" });
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Writes a settings file in `dir`.
 *
 * @param dir The folder.
 * @param settings The settings, written as JSON.
 * @returns The file's path.
 */
export async function settingsFile(
  dir: string,
  settings: object,
): Promise<string> {
  const path = `${dir}/settings.jsonc`;
  await Deno.writeTextFile(path, JSON.stringify(settings, null, 2));
  return path;
}

/** An admin secret long enough for the settings file (16 characters or more). */
export const ADMIN_SECRET = "operators-only-0123456789";

/** A tuple of `N` elements of type `T`. */
export type Tuple<N extends number, T, R extends T[] = []> = R["length"] extends
  N ? R
  : Tuple<N, T, [...R, T]>;

/**
 * Connects `count` clients to a port on 127.0.0.1.
 *
 * @param port The server's port.
 * @param count How many clients.
 * @returns The clients; dispose of them all with `await using`.
 */
export async function connectMany<N extends number>(
  port: number,
  count: N,
): Promise<Tuple<N, LockClient> & AsyncDisposable> {
  const clients = await Promise.all(
    Array.from({ length: count }, () => connect({ port })),
  );
  return Object.assign(clients as Tuple<N, LockClient>, {
    async [Symbol.asyncDispose]() {
      await Promise.all(clients.map((client) => client.close()));
    },
  });
}
