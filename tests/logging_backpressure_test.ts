// Logging never blocks the server: a real `pklock serve` whose standard error
// is a pipe nobody reads keeps serving, drops the lines it cannot queue, and
// says how many once standard error is read again.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { deadline, MAIN } from "./helpers.ts";

/** Text read from a stream, matched a pattern at a time. */
class TextReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #text = "";

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Reads until `pattern` matches; what follows the match stays unread. */
  async until(pattern: RegExp): Promise<RegExpMatchArray> {
    while (true) {
      const match = this.#text.match(pattern);
      if (match !== null) {
        this.#text = this.#text.slice(match.index! + match[0].length);
        return match;
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`Stream ended before ${pattern}`);
      this.#text += value;
    }
  }

  /** Reads to the end; returns what was not matched yet. */
  async rest(): Promise<string> {
    while (true) {
      const { value, done } = await this.#reader.read();
      if (done) return this.#text;
      this.#text += value;
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

function kill(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // Exited already.
  }
}

Deno.test("a server whose standard error is never read keeps granting locks, then reports the log lines it dropped", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pklock-log-" });
  // Debug logs two lines per lock and release: the 64 KiB pipe is full
  // within a few hundred cycles (where the server froze before it had a
  // LogSink), the 1 MiB queue within some 4,000; nothing reads it until then.
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      MAIN,
      "serve",
      "--port",
      "0",
      "--state-file",
      `${dir}/state.json`,
      "--log-level",
      "debug",
    ],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new TextReader(child.stdout);
  const stderr = new TextReader(child.stderr);
  try {
    const listening = await deadline(
      stdout.until(/listening on .*:(\d+)\n/),
      30_000,
      "the server to listen",
    );
    const port = Number(listening[1]);
    {
      await using holder = await connect({ port });
      await using churn = await connect({ port });
      await using _held = await holder.lock("held");
      let cycles = 0;
      await deadline(
        (async () => {
          for (; cycles < 12_000; cycles++) {
            const lock = await churn.lock("jobs");
            await lock.release();
          }
        })(),
        30_000,
        "12,000 lock and release cycles with standard error unread",
      ).catch((error) => {
        // A frozen server would never answer the releases on the way out.
        kill(child);
        throw new Error(`The server froze after ${cycles} cycles`, {
          cause: error,
        });
      });
    }
    const dropped = await deadline(
      stderr.until(
        /\[WRN\] pklock·log: Dropped (\d+) log lines: standard error was not read fast enough/,
      ),
      30_000,
      "the count of dropped lines",
    );
    assert.ok(Number(dropped[1]) > 1_000, dropped[0]);
    // Shutdown still exits 0; its own lines may be dropped too while the
    // backlog is read. Whatever was written is whole lines, never interleaved.
    child.kill("SIGTERM");
    const rest = await deadline(stderr.rest(), 30_000, "standard error to end");
    for (const line of rest.split("\n").slice(1, -1)) {
      assert.match(line, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+00:00 \[/);
    }
    assert.match(rest, /\n$/);
    assert.equal((await child.status).code, 0);
  } finally {
    kill(child);
    await child.status;
    await stdout.cancel();
    await stderr.cancel();
    await Deno.remove(dir, { recursive: true });
  }
});
