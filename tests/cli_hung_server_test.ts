// A hung server never hangs the client: a real server stopped with SIGSTOP
// before or after the CLI connects, and the CLI bounded by its own clock or
// ended by SIGTERM or SIGINT in every phase (connect, hello, wait, hold).
import assert from "node:assert/strict";
import { connect, type LockClient } from "../mod.ts";
import { delay } from "../message/io.ts";
import { cli, deadline, type DenoProcess, spawnServer } from "./helpers.ts";
import { GroupLeader, pklockArgv } from "./fixtures/cli_processes.ts";

/** Bound on how long any CLI may take to give up or stop here. */
const PROMPTLY_MS = 8000;

/** A server stopped with SIGSTOP, and what was set up before. */
interface Stopped<T> extends AsyncDisposable {
  server: DenoProcess;
  port: number;
  before: T;
}

/** Starts a server and stops it once `before` has run. */
async function stoppedServer<T = undefined>(
  before: (server: DenoProcess, port: number) => Promise<T> = () =>
    Promise.resolve(undefined as T),
): Promise<Stopped<T>> {
  const { process: server, port } = await spawnServer(["--log-level", "debug"]);
  const set = await before(server, port);
  server.kill("SIGSTOP");
  return {
    server,
    port,
    before: set,
    async [Symbol.asyncDispose]() {
      server.kill("SIGCONT");
      await server[Symbol.asyncDispose]();
    },
  };
}

/** Holds "busy" in the test, then starts `pklock ...args` waiting for it. */
async function waitingBehindHolder<T extends { pid: number }>(
  server: DenoProcess,
  port: number,
  start: () => T,
): Promise<{ holder: LockClient; waiter: T }> {
  const holder = await connect({ port });
  await holder.lock("busy");
  const waiter = start();
  await server.waitFor(/waits for "busy"/, "stderr");
  return { holder, waiter };
}

/**
 * Waits until the process has a TCP connection to `port` open: the kernel
 * completes the handshake for a stopped server, and nothing else marks the
 * moment, so this polls /proc.
 */
async function connectedTo(pid: number, port: number): Promise<void> {
  const remote = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const started = Date.now();
  while (Date.now() - started < PROMPTLY_MS) {
    const inodes = new Set<string>();
    for (const { name } of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        const link = Deno.readLinkSync(`/proc/${pid}/fd/${name}`);
        inodes.add(/^socket:\[(\d+)\]$/.exec(link)?.[1] ?? "");
      } catch {
        // Closed while listing.
      }
    }
    const lines = Deno.readTextFileSync("/proc/net/tcp").split("\n");
    if (
      lines.some((line) => {
        const fields = line.trim().split(/\s+/);
        return fields[2]?.endsWith(remote) && fields[3] === "01" &&
          inodes.has(fields[9] ?? "");
      })
    ) return;
    await delay(20);
  }
  throw new Error(`pid ${pid} never connected to port ${port}`);
}

Deno.test("run gives up after --connect-timeout when the server was stopped before it connected", async () => {
  await using stopped = await stoppedServer();
  const started = performance.now();
  await using runner = cli([
    "run",
    "x",
    "-p",
    String(stopped.port),
    "--connect-timeout",
    "1s",
    "--wait",
    "2",
    "--",
    "echo",
    "must not run",
  ]);
  const result = await deadline(runner.result(), PROMPTLY_MS, "run to give up");
  assert.equal(result.code, 4, result.stderr);
  assert.equal(result.stdout, "");
  assert.match(
    result.stderr,
    /^pklock: Cannot connect to 127\.0\.0\.1:\d+: no answer within 1000 ms \(is the server at 127\.0\.0\.1:\d+ stopped or overloaded\? --connect-timeout sets the limit\)\n$/,
  );
  assert.ok(performance.now() - started >= 1000);
});

Deno.test("run --wait ends on the client's clock when the server stops while it waits", async () => {
  await using stopped = await stoppedServer((server, port) =>
    waitingBehindHolder(
      server,
      port,
      () =>
        cli([
          "run",
          "busy",
          "-p",
          String(port),
          "--wait",
          "2",
          "--",
          "echo",
          "no",
        ]),
    )
  );
  const { holder, waiter } = stopped.before;
  await using _waiter = waiter;
  const result = await deadline(waiter.result(), PROMPTLY_MS, "run to give up");
  assert.equal(result.code, 3, result.stderr);
  assert.equal(result.stdout, "");
  assert.match(
    result.stderr,
    /^pklock: Cannot acquire lock "busy": timed out after 2000 ms \(the server did not answer\)\n$/,
  );
  stopped.server.kill("SIGCONT");
  await holder.close();
});

/** The signals that must end a client in every phase. */
const SIGNALS = ["SIGTERM", "SIGINT"] as const;

for (const signal of SIGNALS) {
  for (const command of ["run", "try-lock", "hold", "status"] as const) {
    const args = (port: number) =>
      command === "status"
        ? ["status", "-p", String(port)]
        : command === "run"
        ? ["run", "x", "-p", String(port), "--", "echo", "must not run"]
        : [command, "x", "-p", String(port)];
    Deno.test(`${signal} ends ${command} while it connects to a stopped server`, async () => {
      await using stopped = await stoppedServer();
      await using runner = new GroupLeader(
        pklockArgv(args(stopped.port)),
        true,
      );
      await connectedTo(runner.pid, stopped.port);
      Deno.kill(runner.pid, signal);
      const result = await deadline(runner.result(), PROMPTLY_MS, command);
      assert.equal(result.status.signal, signal, result.stderr);
      assert.doesNotMatch(result.stdout, /must not run/);
    });
  }

  for (const command of ["run", "try-lock", "hold"] as const) {
    Deno.test(`${signal} ends ${command} while it waits for a stopped server`, async () => {
      await using stopped = await stoppedServer((server, port) =>
        waitingBehindHolder(server, port, () =>
          new GroupLeader(
            pklockArgv(
              command === "run"
                ? ["run", "busy", "-p", String(port), "--", "echo", "no"]
                : [command, "busy", "-p", String(port)],
            ),
            true,
          ))
      );
      const { holder, waiter } = stopped.before;
      await using runner = waiter;
      Deno.kill(runner.pid, signal);
      const result = await deadline(runner.result(), PROMPTLY_MS, command);
      assert.equal(result.status.signal, signal, result.stderr);
      assert.doesNotMatch(result.stdout, /^no$/m);
      stopped.server.kill("SIGCONT");
      await holder.close();
    });
  }

  Deno.test(`${signal} ends try-lock while it holds a lock on a stopped server`, async () => {
    await using stopped = await stoppedServer(async (_server, port) => {
      const holder = new GroupLeader(
        pklockArgv(["try-lock", "held", "-p", String(port), "--hold", "600"]),
        true,
      );
      await holder.waitFor(/^Got lock "held" \(token \d+\); holding it/m);
      return holder;
    });
    await using runner = stopped.before;
    Deno.kill(runner.pid, signal);
    const result = await deadline(runner.result(), PROMPTLY_MS, "try-lock");
    assert.equal(result.status.signal, signal, result.stderr);
    assert.doesNotMatch(result.stdout, /Released/);
  });

  Deno.test(`${signal} ends hold and run while they hold a lock on a stopped server, with exit 6: the release is not confirmed`, async () => {
    const script =
      "trap 'exit 0' TERM INT; echo 1; while :; do sleep 0.05; done";
    for (const command of ["hold", "run"] as const) {
      await using stopped = await stoppedServer(async (_server, port) => {
        const options = ["held", "-p", String(port), "--connect-timeout", "1"];
        const holder = new GroupLeader(
          pklockArgv(
            command === "hold"
              ? ["hold", ...options]
              : ["run", ...options, "--", "sh", "-c", script],
          ),
          true,
        );
        await holder.waitFor(/^\d+\n/);
        return holder;
      });
      await using runner = stopped.before;
      Deno.kill(runner.pid, signal);
      const result = await deadline(runner.result(), PROMPTLY_MS, command);
      // The stopped server never confirms the release: whether the lock was
      // held until then is not known, so neither exits as if it had been.
      assert.equal(result.status.code, 6, result.stderr);
      assert.match(
        result.stderr,
        // The whole group gets the signal: the shell may report its sleep's
        // death.
        /^(Terminated\n|Interrupt\n)?pklock: Lock "held" may have been lost while (it was held|"sh" ran): its release was not confirmed \(Request "release" got no reply within 1000 ms\)\n$/,
      );
    }
  });
}
