// `pklock run` and `pklock status` as users run them: real child processes,
// a real server process, real signals.
import assert from "node:assert/strict";
import { connect, type LockClient, type StatusResult } from "../mod.ts";
import { cli, deadline, inTempDir, runCli, spawnServer } from "./helpers.ts";

/**
 * A command loop that ends on its own once `pklock run`, its parent, is gone,
 * so that a failed test leaves no stray process behind.
 */
const LOOP = "while kill -0 $PPID 2>/dev/null; do sleep 0.05; done";

/** Arguments of `pklock run NAME -p PORT [options] -- sh -c SCRIPT [args]`. */
function runArgs(
  name: string,
  port: number,
  options: string[],
  script: string,
  ...args: string[]
): string[] {
  return [
    "run",
    name,
    "-p",
    String(port),
    ...options,
    "--",
    "sh",
    "-c",
    script,
    "sh",
    ...args,
  ];
}

/** Whether a process with this id exists. */
async function alive(pid: number): Promise<boolean> {
  const { success } = await new Deno.Command("sh", {
    args: ["-c", `kill -0 ${pid} 2>/dev/null`],
  }).output();
  return success;
}

/** Takes a lock free now, then releases it: the lock was free. */
async function assertFree(client: LockClient, name: string): Promise<void> {
  const lock = await client.tryLock(name);
  assert.ok(lock, `"${name}" is still held`);
  await lock.release();
}

Deno.test("run exits with the command's exit code and passes its output through", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const result = await runCli(
    runArgs(
      "jobs",
      port,
      [],
      'echo "out of the command"; echo oops >&2; exit 7',
    ),
  );
  assert.equal(result.code, 7, result.stderr);
  assert.equal(result.stdout, "out of the command\n");
  assert.equal(result.stderr, "oops\n");
  await using client = await connect({ port });
  await assertFree(client, "jobs");
});

Deno.test("run holds the lock while the command runs and releases it after", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using client = await connect({ port });
  await inTempDir(async (dir) => {
    const fifo = `${dir}/go`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success, "mkfifo");
    // The command opens the FIFO for reading and writing, which never blocks,
    // says it is ready, then blocks until the test writes a line to it.
    await using run = cli(
      runArgs(
        "held",
        port,
        [],
        'exec 3<>"$1"; echo ready; read line <&3; echo "got $line"',
        fifo,
      ),
    );
    const go = async () => {
      // Read and write, so that opening never blocks, even with no reader.
      const file = await Deno.open(fifo, { read: true, write: true });
      try {
        await file.write(new TextEncoder().encode("go\n"));
      } finally {
        file.close();
      }
    };
    try {
      await run.waitFor(/^ready\n/);
      assert.equal(await client.tryLock("held"), null, "held while running");
      const [holder] = (await client.status()).locks[0]!.holders;
      assert.equal(holder?.mode, "exclusive");
      assert.notEqual(holder?.connectionId, client.server.connectionId);
      await go();
      const result = await deadline(run.result(), 10_000, "run to exit");
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, "ready\ngot go\n");
      await assertFree(client, "held");
    } finally {
      await go(); // lets a command still blocked on the FIFO end
    }
  });
});

Deno.test("run gives up with exit code 3, or the -E code, when the lock is not granted in time", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("busy");
  const busy = await runCli(runArgs("busy", port, ["--wait", "0"], "echo ran"));
  assert.equal(busy.code, 3, busy.stderr);
  assert.equal(busy.stdout, "", "the command did not run");
  assert.match(
    busy.stderr,
    /^pklock: Cannot acquire lock "busy": it is held by another client\n$/,
  );
  const late = await runCli(
    runArgs("busy", port, ["--wait", "0.05", "-E", "9"], "echo ran"),
  );
  assert.equal(late.code, 9, late.stderr);
  assert.equal(late.stdout, "");
  assert.match(
    late.stderr,
    /^pklock: Cannot acquire lock "busy": timed out after 50 ms\n$/,
  );
  // The lock stayed with its holder and nobody waits for it.
  const status = await holder.status();
  assert.deepEqual(
    status.locks.map((l) => [l.name, l.holders.length, l.waiters.length]),
    [["busy", 1, 0]],
  );
  await lock.release();
});

Deno.test("run --shared runs alongside a shared holder", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("readers", { mode: "shared" });
  const result = await runCli(
    runArgs("readers", port, ["--shared", "--wait", "0"], "echo reading"),
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, "reading\n");
  await lock.release();
});

Deno.test("run exits 127 when the command cannot be started, and releases the lock", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const missing = "/nonexistent/pklock-no-such-command";
  const result = await runCli([
    "run",
    "jobs",
    "-p",
    String(port),
    "--",
    missing,
  ]);
  assert.equal(result.code, 127, result.stderr);
  assert.match(result.stderr, new RegExp(`Cannot run "${missing}"`));
  await using client = await connect({ port });
  await assertFree(client, "jobs");
});

for (
  const [signal, trap, code] of [
    ["SIGTERM", "TERM", 42],
    ["SIGUSR2", "USR2", 43],
    ["SIGINT", "INT", 44],
  ] as const
) {
  Deno.test(`run passes ${signal} on to the command and exits with its code`, async () => {
    const { process: server, port } = await spawnServer();
    await using _server = server;
    await using run = cli(
      runArgs(
        "signals",
        port,
        [],
        `trap "echo got ${trap}; exit ${code}" ${trap}; echo ready; ${LOOP}`,
      ),
    );
    await run.waitFor(/^ready\n/);
    run.kill(signal);
    const result = await deadline(run.result(), 10_000, "run to exit");
    assert.equal(result.code, code, result.stderr);
    assert.equal(result.stdout, `ready\ngot ${trap}\n`);
    await using client = await connect({ port });
    await assertFree(client, "signals");
  });
}

Deno.test("run stops the command with SIGTERM and exits 6 when the server dies", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using run = cli(
    runArgs(
      "fragile",
      port,
      [],
      `trap "echo got TERM; exit 42" TERM; echo ready; ${LOOP}`,
    ),
  );
  await run.waitFor(/^ready\n/);
  server.kill("SIGKILL");
  await server.result();
  const result = await deadline(run.result(), 10_000, "run to exit");
  assert.equal(result.code, 6, result.stderr);
  assert.equal(result.stdout, "ready\ngot TERM\n");
  // The whole group gets SIGTERM: the shell may report its sleep's death.
  assert.match(
    result.stderr,
    /^pklock: Lost lock "fragile": .*; stopping its process group \(SIGTERM, SIGKILL after 10 s\)\n(Terminated\n)?$/,
  );
});

Deno.test("run kills a command that ignores SIGTERM after --kill-after and still exits 6", async () => {
  await inTempDir(async (dir) => {
    const { process: server, port } = await spawnServer();
    await using _server = server;
    const pidFile = `${dir}/pid`;
    await using run = cli(
      runArgs(
        "stubborn",
        port,
        ["--kill-after", "0.2"],
        `trap "" TERM; echo $$ > "$1"; echo ready; ${LOOP}`,
        pidFile,
      ),
    );
    await run.waitFor(/^ready\n/);
    const pid = Number(await Deno.readTextFile(pidFile));
    assert.ok(Number.isInteger(pid) && pid > 0);
    assert.equal(await alive(pid), true);
    server.kill("SIGKILL");
    await server.result();
    const result = await deadline(run.result(), 10_000, "run to exit");
    assert.equal(result.code, 6, result.stderr);
    assert.match(
      result.stderr,
      /^pklock: Lost lock "stubborn": .*; stopping its process group \(SIGTERM, SIGKILL after 0\.2 s\)\n$/,
    );
    // run waited for it, so it is gone rather than a zombie.
    assert.equal(await alive(pid), false, `command ${pid} still runs`);
  });
});

Deno.test("status prints every lock with its holder and waiters in queue order", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  await using first = await connect({ port });
  await using second = await connect({ port });
  const lock = await holder.lock("jobs");
  const waits = [first.lock("jobs"), second.lock("jobs", { mode: "shared" })];
  await first.ping();
  await second.ping();
  const result = await runCli(["status", "-p", String(port)]);
  assert.equal(result.code, 0, result.stderr);
  const id = (client: LockClient) => client.server.connectionId;
  const peer = "127\\.0\\.0\\.1:\\d+";
  const iso = "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z";
  const held = "\\d+\\.\\ds";
  assert.match(
    result.stdout,
    new RegExp(
      [
        `^pklock \\d+\\.\\d+\\.\\d+ \\(protocol 1\\), up \\d+s; 4 connections open, 4 since start`,
        `lock "jobs" \\(exclusive\\)`,
        `  held by connection ${
          id(holder)
        } from ${peer} for ${held} \\(since ${iso}\\), token ${lock.token}`,
        `  1\\. waiting: connection ${
          id(first)
        } from ${peer} \\(exclusive\\) for ${held} \\(since ${iso}\\)`,
        `  2\\. waiting: connection ${
          id(second)
        } from ${peer} \\(shared\\) for ${held} \\(since ${iso}\\)`,
        "1 lock: 1 holder, 2 waiters",
        "$",
      ].join("\n"),
    ),
  );
  await lock.release();
  await (await waits[0]!).release();
  await (await waits[1]!).release();
});

Deno.test("status says so when no lock is held or waited for", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const result = await runCli(["status", "-p", String(port)]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stdout,
    /^pklock \d+\.\d+\.\d+ \(protocol 1\), up \d+s; 1 connection open, 1 since start\nNo locks held or waited for\.\n$/,
  );
});

/** Asserts that a value has exactly these keys. */
function assertKeys(value: unknown, keys: string[], where: string): void {
  assert.ok(
    typeof value === "object" && value !== null && !Array.isArray(value),
    `${where} is an object`,
  );
  assert.deepEqual(Object.keys(value).sort(), [...keys].sort(), where);
}

const ISO_DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** Checks every field of a status report against the documented schema. */
function assertStatusSchema(value: unknown): asserts value is StatusResult {
  assertKeys(
    value,
    ["status", "server", "connections", "locks", "totals"],
    "status",
  );
  const { status, server, connections, locks, totals } = value as StatusResult;
  assertKeys(totals, ["locks", "holders", "waiters"], "totals");
  assert.equal(totals!.locks, locks.length);
  assert.equal(status, "ok");
  assertKeys(server, ["version", "protocol", "startedAt", "uptime"], "server");
  assert.match(server.version, /^\d+\.\d+\.\d+/);
  assert.ok(Number.isInteger(server.protocol) && server.protocol > 0);
  assert.match(server.startedAt, ISO_DATE);
  assert.ok(typeof server.uptime === "number" && server.uptime >= 0);
  assertKeys(connections, ["current", "total"], "connections");
  assert.ok(Number.isInteger(connections.current) && connections.current > 0);
  assert.ok(Number.isInteger(connections.total));
  assert.ok(connections.total >= connections.current);
  assert.ok(Array.isArray(locks));
  for (const lock of locks) {
    assertKeys(lock, ["name", "mode", "holders", "waiters"], "lock");
    assert.equal(typeof lock.name, "string");
    assert.ok(["exclusive", "shared"].includes(lock.mode), lock.mode);
    assert.ok(Array.isArray(lock.holders) && Array.isArray(lock.waiters));
    for (
      const [list, token] of [[lock.holders, true], [
        lock.waiters,
        false,
      ]] as const
    ) {
      for (const request of list) {
        // `label` is there only for a client that gave one.
        const keys = ["connectionId", "peer", "mode", "since", "elapsed"];
        if ("label" in request) {
          keys.push("label");
          assert.equal(typeof request.label, "string");
        }
        assertKeys(request, token ? [...keys, "token"] : keys, "request");
        assert.ok(Number.isInteger(request.connectionId));
        assert.match(
          request.peer,
          /^(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:.]+\]):\d+$/,
        );
        assert.ok(["exclusive", "shared"].includes(request.mode));
        assert.match(request.since, ISO_DATE);
        assert.ok(typeof request.elapsed === "number" && request.elapsed >= 0);
        if (token) {
          assert.ok(Number.isInteger(request.token) && request.token! > 0);
        }
      }
    }
  }
}

Deno.test("status --json prints the server's status report, every field as documented", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using a = await connect({ port });
  await using b = await connect({ port, label: "nightly backup" });
  const shared = await a.lock("reports", { mode: "shared" });
  const solo = await a.lock("backup");
  const waiting = b.lock("backup", { mode: "shared" });
  await b.ping();
  const result = await runCli(["status", "--json", "-p", String(port)]);
  assert.equal(result.code, 0, result.stderr);
  const status: unknown = JSON.parse(result.stdout);
  assertStatusSchema(status);
  assert.deepEqual(status.connections, { current: 3, total: 3 });
  assert.deepEqual(
    status.locks.map((lock) => ({
      name: lock.name,
      mode: lock.mode,
      holders: lock.holders.map((h) => [h.connectionId, h.mode, h.token]),
      waiters: lock.waiters.map((w) => [w.connectionId, w.mode, w.label]),
    })),
    [
      {
        name: "backup",
        mode: "exclusive",
        holders: [[a.server.connectionId, "exclusive", solo.token]],
        waiters: [[b.server.connectionId, "shared", "nightly backup"]],
      },
      {
        name: "reports",
        mode: "shared",
        holders: [[a.server.connectionId, "shared", shared.token]],
        waiters: [],
      },
    ],
  );
  await solo.release();
  await (await waiting).release();
  await shared.release();
});

Deno.test("status without a server exits 4 and says why", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  for (const args of [["status"], ["status", "--json"]]) {
    const result = await runCli([...args, "-p", String(port)]);
    assert.equal(result.code, 4);
    assert.equal(result.stdout, "");
    assert.match(
      result.stderr,
      new RegExp(`^pklock: Cannot connect to 127\\.0\\.0\\.1:${port}`),
    );
  }
});

Deno.test("run stopped by a signal while it waits exits 128+n and leaves no request behind", async () => {
  const { process: server, port } = await spawnServer(["--log-level", "debug"]);
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("signalled");
  await using runner = cli([
    "run",
    "signalled",
    "--port",
    String(port),
    "--",
    "sh",
    "-c",
    "echo must not run",
  ]);
  await server.waitFor(/waits for "signalled"/, "stderr");
  runner.kill("SIGTERM");
  const result = await deadline(runner.result(), 10_000, "run to exit");
  assert.equal(result.code, 143, result.stderr);
  assert.doesNotMatch(result.stdout, /must not run/);
  const status = await holder.status();
  assert.deepEqual(
    status.locks.map((entry) => [entry.name, entry.waiters.length]),
    [["signalled", 0]],
  );
  await lock.release();
});
