// Deno ≥ 2.9.2 opens an unauthenticated V8 inspector on 127.0.0.1:9229 when
// a process gets SIGUSR1 (from 500 ms after it starts). pklock ignores
// SIGUSR1 in every subcommand: serve, run and hold are sent one here, keep
// working, and listen on nothing new.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { cli, MAIN, spawnServer } from "./helpers.ts";
import {
  assertNoInspector,
  GroupLeader,
  pklockArgv,
  sendUsr1WhenArmed,
} from "./fixtures/cli_processes.ts";

Deno.test("serve ignores SIGUSR1: no inspector opens and it keeps serving", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await sendUsr1WhenArmed(server.pid);
  // Replies come in order: once a request made after the signal is answered,
  // the signal has been dealt with.
  await using client = await connect({ port });
  await client.ping();
  const lock = await client.lock("after-usr1");
  await lock.release();
  assertNoInspector(server.pid, [port]);
  server.kill("SIGTERM");
  const result = await server.result();
  assert.equal(result.code, 0);
  assert.doesNotMatch(result.stderr, /Debugger listening|warning/);
});

Deno.test("run ignores SIGUSR1 and keeps its command and its lock", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using runner = cli([
    "run",
    "usr1",
    "-p",
    String(port),
    "--",
    "sh",
    "-c",
    "trap 'echo command got USR1' USR1; trap 'exit 0' TERM; echo ready; " +
    "while :; do sleep 0.05; done",
  ]);
  await runner.waitFor(/ready\n/);
  await sendUsr1WhenArmed(runner.pid);
  await using client = await connect({ port });
  assert.equal(await client.tryLock("usr1"), null, "still held");
  assertNoInspector(runner.pid, []);
  runner.kill("SIGTERM");
  const result = await runner.result();
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, "ready\n");
  assert.doesNotMatch(result.stderr, /Debugger listening/);
});

Deno.test("hold ignores SIGUSR1 and keeps its lock", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = new GroupLeader(
    pklockArgv(["hold", "usr1", "-p", String(port)]),
    true,
  );
  await holder.waitFor(/^\d+\n/);
  await sendUsr1WhenArmed(holder.pid);
  await using client = await connect({ port });
  assert.equal(await client.tryLock("usr1"), null, "still held");
  assertNoInspector(holder.pid, []);
  await holder.closeInput();
  const result = await holder.result();
  assert.equal(result.status.code, 0, result.stderr);
  assert.doesNotMatch(result.stderr, /Debugger listening/);
});

Deno.test("without --allow-ffi, pklock warns that SIGUSR1 would open an inspector", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      MAIN,
      "status",
      "-p",
      String(port),
    ],
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(code, 0);
  assert.match(
    new TextDecoder().decode(stderr),
    /^pklock: warning: without --allow-ffi, SIGUSR1 cannot be ignored; a SIGUSR1 sent to this process \(pid \d+\) opens Deno's V8 inspector on 127\.0\.0\.1:9229, through which any local user can run code in it\n$/,
  );
});
