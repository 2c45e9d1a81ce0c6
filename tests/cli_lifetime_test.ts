// The command of `pklock run` never outlives its lock, and signals reach it
// once: real servers, real `run` processes killed with SIGKILL, process
// groups signalled as systemd, CI runners and shells do.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { cli, deadline, runCli, spawnServer } from "./helpers.ts";
import {
  GroupLeader,
  killLeftover,
  pklockArgv,
  running,
} from "./fixtures/cli_processes.ts";

/** `pklock run NAME -p PORT [options] -- sh -c SCRIPT`. */
function runShell(
  name: string,
  port: number,
  script: string,
  ...options: string[]
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
  ];
}

Deno.test("kill -9 of run kills its command, and the next run gets in only once it is gone", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using runner = cli(
    runShell("job", port, "echo $$; while :; do sleep 0.05; done"),
  );
  const pid = Number((await runner.waitFor(/^(\d+)\n/))[1]);
  try {
    runner.kill("SIGKILL");
    // Started at once, it waits for the lock and then looks at the command.
    const next = runCli(
      runShell(
        "job",
        port,
        `s=$(sed -n 's/^State:[[:space:]]*\\(.\\).*/\\1/p' /proc/${pid}/status 2>/dev/null); ` +
          'if [ -z "$s" ] || [ "$s" = Z ]; then echo gone; else echo "running $s"; fi',
        "--wait",
        "10",
      ),
    );
    // The command held run's standard output: its end means it exited.
    await deadline(runner.result(), 10_000, "the command to exit");
    assert.equal(running(pid), false);
    const result = await deadline(next, 15_000, "the next run");
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "gone\n");
  } finally {
    killLeftover(pid);
  }
});

Deno.test("when the lock is lost, run stops the command's whole process group", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  // The shell waits for sleep, which SIGTERM to the shell alone would leave
  // running, re-parented, after run exits 6.
  await using runner = cli(
    runShell("lost", port, "sleep 23.5 & echo $!; wait; echo after"),
  );
  const sleeper = Number((await runner.waitFor(/^(\d+)\n/))[1]);
  try {
    assert.equal(running(sleeper), true);
    server.kill("SIGKILL");
    await server.result();
    // sleep holds run's standard output too: the result waits for it.
    const result = await deadline(runner.result(), 10_000, "run and sleep");
    assert.equal(result.code, 6, result.stderr);
    assert.doesNotMatch(result.stdout, /after/);
    assert.equal(running(sleeper), false, `sleep ${sleeper} still runs`);
  } finally {
    killLeftover(sleeper);
  }
});

Deno.test("a signal sent to run's whole process group reaches the command once", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  // Counts SIGTERMs; SIGUSR2, passed on after them, makes it report.
  const script = "n=0; trap 'n=$((n+1)); echo TERM $n' TERM; " +
    "trap 'done=1' USR2; echo ready; " +
    'while [ -z "$done" ]; do sleep 0.05; done; echo "count $n"';
  await using runner = new GroupLeader(
    pklockArgv(runShell("once", port, script)),
  );
  await runner.waitFor(/ready\n/);
  // systemd's KillMode=control-group and CI runners signal the group.
  Deno.kill(-runner.pid, "SIGTERM");
  await runner.waitFor(/TERM 1\n/);
  Deno.kill(-runner.pid, "SIGUSR2");
  const result = await deadline(runner.result(), 10_000, "run to exit");
  assert.equal(result.stdout, "ready\nTERM 1\ncount 1\n", result.stderr);
  assert.equal(result.status.code, 0);
});

Deno.test("run dies of the signal that killed its command, so a shell loop stops", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  // As Ctrl-C does to a job: SIGINT to the loop's shell and to run at once.
  const loop = `while :; do $PKLOCK run loop -p ${port} -- sh -c ` +
    `'echo ready; while :; do sleep 0.05; done'; echo looped; done`;
  await using shell = new GroupLeader(["bash", "-c", loop]);
  await shell.waitFor(/ready\n/);
  Deno.kill(-shell.pid, "SIGINT");
  const result = await deadline(shell.result(), 10_000, "the loop to stop");
  assert.doesNotMatch(result.stdout, /looped/, result.stderr);
  assert.equal(result.status.signal, "SIGINT", result.stderr);
});

Deno.test("run passes a command's fatal signal on as its own death", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    await using runner = new GroupLeader(
      pklockArgv(runShell("fatal", port, `kill -${signal.slice(3)} $$`)),
    );
    const result = await deadline(runner.result(), 10_000, "run to exit");
    assert.equal(result.status.signal, signal, result.stderr);
  }
  await using client = await connect({ port });
  const lock = await client.tryLock("fatal");
  assert.ok(lock, "released before run died");
  await lock.release();
});

Deno.test("the command sees its lock, fencing token and server in its environment", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const result = await runCli(
    runShell(
      "env",
      port,
      'echo "$PKLOCK_LOCK $PKLOCK_TOKEN $PKLOCK_MODE $PKLOCK_HOST $PKLOCK_PORT"',
    ),
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, `env 1 exclusive 127.0.0.1 ${port}\n`);
});
