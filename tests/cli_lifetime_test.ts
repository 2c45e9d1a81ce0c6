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

Deno.test("kill -9 of run: the command dies, and writes nothing once the next holder is granted", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const dir = await Deno.makeTempDir({ prefix: "pklock-kill9-" });
  const log = `${dir}/log`;
  // The command appends to the log as fast as it can while it runs.
  await using runner = cli(
    runShell(
      "job",
      port,
      `echo tick >> "${log}"; echo $$; while :; do echo tick >> "${log}"; done`,
    ),
  );
  const pid = Number((await runner.waitFor(/^(\d+)\n/))[1]);
  try {
    await using next = await connect({ port });
    const granted = next.lock("job");
    await next.ping(); // queued behind run
    runner.kill("SIGKILL");
    const lock = await deadline(granted, 10_000, "the next holder's grant");
    // Appends are ordered: a tick after this line ran under another's lock.
    await Deno.writeTextFile(log, "granted\n", { append: true });
    // The command held run's standard output: its end means it is exiting
    // (its files are closed; /proc may show it a moment longer).
    await deadline(runner.result(), 10_000, "the command to exit");
    assert.match(await Deno.readTextFile(log), /^(tick\n)+granted\n$/);
    await lock.release();
  } finally {
    killLeftover(pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kill -9 of run: what the command started keeps the lock until it exits, as with flock(1)", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const dir = await Deno.makeTempDir({ prefix: "pklock-kill9-" });
  const fifo = `${dir}/go`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success, "mkfifo");
  // The background child waits for a line on the FIFO, then exits.
  await using runner = cli(
    runShell(
      "job",
      port,
      `(read line < "${fifo}"; echo "child done") & echo $!; wait`,
    ),
  );
  const child = Number((await runner.waitFor(/^(\d+)\n/))[1]);
  try {
    runner.kill("SIGKILL");
    const busy = await runCli(
      runShell("job", port, "echo got in", "--wait", "0"),
    );
    assert.equal(busy.code, 3, "still held while the child runs");
    assert.equal(running(child), true);
    await Deno.writeTextFile(fifo, "go\n");
    const result = await deadline(runner.result(), 10_000, "the child to end");
    assert.match(result.stdout, /child done\n$/);
    const free = await runCli(
      runShell("job", port, "echo got in", "--wait", "10"),
    );
    assert.equal(free.code, 0, free.stderr);
    assert.equal(free.stdout, "got in\n");
  } finally {
    killLeftover(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kill -9 of run -o: the lock is free while what the command started runs on", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using runner = cli(
    runShell("job", port, "sleep 20 & echo $!; wait", "-o"),
  );
  const child = Number((await runner.waitFor(/^(\d+)\n/))[1]);
  try {
    runner.kill("SIGKILL");
    const next = await runCli(
      runShell("job", port, "echo got in", "--wait", "10"),
    );
    assert.equal(next.code, 0, next.stderr);
    assert.equal(running(child), true, "flock's -o: the child keeps nothing");
  } finally {
    killLeftover(child);
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
    // sleep holds run's standard output too: the result waits for it, and
    // would wait 23.5 s had sleep not been stopped.
    const result = await deadline(runner.result(), 10_000, "run and sleep");
    assert.equal(result.code, 6, result.stderr);
    assert.doesNotMatch(result.stdout, /after/);
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
