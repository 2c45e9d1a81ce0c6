// A lock lost while `pklock run`'s command ran, noticed only once the command
// has ended: `run` (stopped with SIGSTOP meanwhile, so that it cannot notice
// sooner) exits 6 and says so, whether an operator forced the release, the
// server dropped it for missed heartbeats, or it was killed and restarted. A
// stall alone loses nothing: `run` exits as its command did. `hold` follows
// the same rule.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { delay } from "../message/io.ts";
import {
  ADMIN_SECRET,
  deadline,
  inTempDir,
  settingsFile,
  spawnServer,
} from "./helpers.ts";
import {
  GroupLeader,
  pklockArgv,
  processState,
} from "./fixtures/cli_processes.ts";

/** Bound on each wait of these tests. */
const WAIT_MS = 10_000;

/** What `run` printed and how it ended. */
type Result = Awaited<ReturnType<GroupLeader["result"]>>;

/**
 * Stops a process with SIGSTOP and waits until the kernel has stopped it:
 * nothing but /proc tells when that is, so this polls it.
 */
async function stop(pid: number): Promise<void> {
  Deno.kill(pid, "SIGSTOP");
  const started = performance.now();
  while (processState(pid) !== "T") {
    if (performance.now() - started > WAIT_MS) {
      throw new Error(`pid ${pid} did not stop`);
    }
    await delay(10);
  }
}

/**
 * A command that says `ready`, waits for {@linkcode Command.finish}, says
 * `finished` and ends with `end`, and whose exit the test can await while
 * `run`, its parent, is stopped and cannot reap it: it holds the write end of
 * a FIFO the test reads to its end.
 */
class Command implements AsyncDisposable {
  readonly script: string;
  readonly #go: string;
  readonly #exit: string;
  readonly #exited: Promise<string>;

  /**
   * @param dir A folder for the FIFOs, made by the test.
   * @param end How the command ends: `exit 7`, `kill -TERM $$`, ...
   */
  constructor(dir: string, end: string) {
    this.#go = `${dir}/go`;
    this.#exit = `${dir}/exited`;
    for (const fifo of [this.#go, this.#exit]) {
      const made = new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
      assert.ok(made.success, "mkfifo");
    }
    this.script = `exec 4>"${this.#exit}"; exec 3<>"${this.#go}"; ` +
      `echo ready; read line <&3; echo finished; ${end}`;
    // Opening a FIFO for reading waits for its writer: the command.
    this.#exited = Deno.open(this.#exit, { read: true }).then((file) =>
      new Response(file.readable).text()
    );
  }

  /** Lets the command end, and waits until it has exited. */
  async finish(): Promise<void> {
    await this.#write(this.#go, "go\n");
    await deadline(this.#exited, WAIT_MS, "the command to exit");
  }

  /** Unblocks whatever still waits on the FIFOs. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#write(this.#go, "go\n");
    // A writer of our own ends the read of a command that never opened it.
    await this.#write(this.#exit, "");
    await this.#exited;
  }

  async #write(fifo: string, text: string): Promise<void> {
    // Read and write, so that opening never blocks, even with no reader.
    using file = await Deno.open(fifo, { read: true, write: true });
    await file.write(new TextEncoder().encode(text));
  }
}

/**
 * Runs `pklock run NAME -p PORT -- sh -c ...` with a {@linkcode Command},
 * stops `run` once the command is ready, calls `meanwhile`, lets the command
 * end, and lets `run` go on only once the command has exited.
 *
 * @param port The server's port.
 * @param name The lock's name.
 * @param end How the command ends.
 * @param meanwhile What happens while `run` is stopped and the command runs.
 * @returns How `run` ended.
 */
function stalledRun(
  port: number,
  name: string,
  end: string,
  meanwhile: () => Promise<void>,
): Promise<Result> {
  return inTempDir(async (dir) => {
    await using command = new Command(dir, end);
    await using run = new GroupLeader(
      pklockArgv(
        ["run", name, "-p", String(port), "--", "sh", "-c", command.script],
      ),
    );
    await deadline(run.waitFor(/^ready\n/), WAIT_MS, "the command to start");
    await stop(run.pid);
    try {
      await meanwhile();
      await command.finish();
    } finally {
      Deno.kill(run.pid, "SIGCONT");
    }
    return await deadline(run.result(), WAIT_MS, "run to exit");
  });
}

/** What `run` says when the loss is noticed before or after the command. */
function lossMessage(name: string): RegExp {
  return new RegExp(
    `^pklock: (Lost lock "${name}": .*; stopping its process group \\(SIGTERM, SIGKILL after 10 s\\)|` +
      `Lock "${name}" may have been lost while "sh" ran: its release was not confirmed \\(.*\\))\\n$`,
  );
}

/** Starts a server with the admin secret and `settings`. */
async function withServer(
  settings: object,
  body: (port: number) => Promise<void>,
): Promise<void> {
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/admin-secret`;
    await Deno.writeTextFile(secretFile, ADMIN_SECRET);
    const config = await settingsFile(dir, {
      admin: { secretFile },
      ...settings,
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    await body(port);
  });
}

/**
 * Forces the release of `name` and waits until the next client is granted
 * it: the holder's connection is closed by then.
 */
async function forceRelease(port: number, name: string): Promise<void> {
  await using operator = await connect({ port });
  const { released } = await operator.forceRelease(name, ADMIN_SECRET);
  assert.equal(released?.length, 1, "one holder disconnected");
  await using next = await connect({ port });
  const lock = await next.lock(name, { wait: WAIT_MS });
  await lock.release();
}

Deno.test("run exits 6 when an operator forced the release while its command ran", async () => {
  await withServer({}, async (port) => {
    const result = await stalledRun(
      port,
      "forced",
      "exit 0",
      () => forceRelease(port, "forced"),
    );
    assert.equal(result.status.code, 6, result.stderr);
    assert.equal(result.stdout, "ready\nfinished\n", "the command ended");
    assert.match(result.stderr, lossMessage("forced"));
  });
});

Deno.test("run exits 6 when the server dropped it for missed heartbeats while the command ran", async () => {
  const heartbeat = { interval: 100, timeout: 400 };
  await withServer({ heartbeat }, async (port) => {
    const result = await stalledRun(port, "dropped", "exit 0", async () => {
      // Granted once the server has dropped the stopped run.
      await using next = await connect({ port });
      const lock = await next.lock("dropped", { wait: WAIT_MS });
      await lock.release();
    });
    assert.equal(result.status.code, 6, result.stderr);
    assert.equal(result.stdout, "ready\nfinished\n", "the command ended");
    assert.match(result.stderr, lossMessage("dropped"));
  });
});

Deno.test("run exits 6 when the server was killed and restarted on its port while the command ran", async () => {
  const first = await spawnServer();
  await using _first = first.process;
  const { port } = first;
  let second: Awaited<ReturnType<typeof spawnServer>> | undefined;
  try {
    const result = await stalledRun(port, "restarted", "exit 0", async () => {
      first.process.kill("SIGKILL");
      await first.process.result();
      second = await spawnServer(["--port", String(port)]);
      // Another client holds the lock while the command still runs.
      await using other = await connect({ port });
      const lock = await other.tryLock("restarted");
      assert.ok(lock, "free on the restarted server");
      await lock.release();
    });
    assert.equal(result.status.code, 6, result.stderr);
    assert.equal(result.stdout, "ready\nfinished\n", "the command ended");
    assert.match(result.stderr, lossMessage("restarted"));
  } finally {
    await second?.process[Symbol.asyncDispose]();
  }
});

Deno.test("a stalled run that lost nothing exits as its command did, or dies of its signal", async (t) => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using client = await connect({ port });
  const stillHeld = async () => {
    assert.equal(await client.tryLock("stalled"), null, "held by run");
  };
  await t.step("exit code", async () => {
    const result = await stalledRun(port, "stalled", "exit 7", stillHeld);
    assert.equal(result.status.code, 7, result.stderr);
    assert.equal(result.stdout, "ready\nfinished\n");
    assert.equal(result.stderr, "");
  });
  await t.step("signal", async () => {
    const result = await stalledRun(
      port,
      "stalled",
      "kill -TERM $$",
      stillHeld,
    );
    assert.equal(result.status.signal, "SIGTERM", result.stderr);
    assert.equal(result.stdout, "ready\nfinished\n");
  });
  const lock = await client.tryLock("stalled");
  assert.ok(lock, "released by run");
  await lock.release();
});

Deno.test("hold exits 6 when an operator forced the release while it was stopped", async () => {
  await withServer({}, async (port) => {
    await using holder = new GroupLeader(
      pklockArgv(["hold", "forced-hold", "-p", String(port)]),
      true,
    );
    await deadline(holder.waitFor(/^\d+\n/), WAIT_MS, "the token");
    await stop(holder.pid);
    try {
      await forceRelease(port, "forced-hold");
      await holder.closeInput();
    } finally {
      Deno.kill(holder.pid, "SIGCONT");
    }
    const result = await deadline(holder.result(), WAIT_MS, "hold to exit");
    assert.equal(result.status.code, 6, result.stderr);
    assert.match(
      result.stderr,
      /^pklock: (Lost lock "forced-hold": an operator forced its release|Lock "forced-hold" may have been lost while it was held: its release was not confirmed \(.*\))\n$/,
    );
  });
});
