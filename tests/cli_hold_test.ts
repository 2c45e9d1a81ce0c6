// `pklock hold`: a script locks a section, as with flock's `exec 9>f; flock 9`
// or `etcdctl lock NAME`: real CLI processes, a real server, real bash.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { deadline, runCli, spawnServer } from "./helpers.ts";
import { GroupLeader, pklockArgv } from "./fixtures/cli_processes.ts";

Deno.test("hold prints the fencing token and holds the lock until its stdin closes", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using client = await connect({ port });
  await using holder = new GroupLeader(
    pklockArgv(["hold", "section", "-p", String(port), "--label", "nightly"]),
    true,
  );
  const token = Number((await holder.waitFor(/^(\d+)\n/)).trim());
  const [held] = (await client.status()).locks;
  assert.equal(held?.name, "section");
  assert.equal(held?.holders[0]?.token, token);
  assert.equal(held?.holders[0]?.label, "nightly");
  assert.equal(await client.tryLock("section"), null);
  await holder.closeInput();
  const result = await deadline(holder.result(), 10_000, "hold to release");
  assert.equal(result.status.code, 0, result.stderr);
  assert.equal(result.stdout, `${token}\n`);
  const lock = await client.tryLock("section");
  assert.ok(lock, "released");
  await lock.release();
});

Deno.test("a bash script locks a section with hold in a coprocess, as --help shows", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const script = `
    coproc LOCK { $PKLOCK hold nightly -p ${port}; }
    read -r token <&"\${LOCK[0]}"
    $PKLOCK run nightly -n -p ${port} -- echo "must not run"
    echo "in the section with token $token, other got $?"
    exec {LOCK[1]}>&-; wait
    $PKLOCK run nightly -n -p ${port} -- echo "after the section"
  `;
  await using shell = new GroupLeader(["bash", "-c", script]);
  const result = await deadline(shell.result(), 20_000, "the script");
  assert.equal(result.status.code, 0, result.stderr);
  assert.equal(
    result.stdout,
    "in the section with token 1, other got 3\nafter the section\n",
  );
});

Deno.test("hold -n on a held lock prints nothing and exits 3; a lost lock exits 6", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using client = await connect({ port });
  const lock = await client.lock("taken");
  const busy = await runCli(["hold", "-n", "taken", "-p", String(port)]);
  assert.deepEqual(busy, { code: 3, stdout: "", stderr: "" });
  await lock.release();
  await using holder = new GroupLeader(
    pklockArgv(["hold", "taken", "-p", String(port)]),
    true,
  );
  await holder.waitFor(/^\d+\n/);
  server.kill("SIGKILL");
  await server.result();
  const result = await deadline(holder.result(), 10_000, "hold to notice");
  assert.equal(result.status.code, 6);
  assert.match(result.stderr, /^pklock: Lost lock "taken": /);
});

Deno.test("hold releases the lock and dies of SIGINT", async () => {
  const { process: server, port } = await spawnServer(["--log-level", "debug"]);
  await using _server = server;
  await using holder = new GroupLeader(
    pklockArgv(["hold", "interrupted", "-p", String(port)]),
    true,
  );
  await holder.waitFor(/^\d+\n/);
  Deno.kill(holder.pid, "SIGINT");
  const result = await deadline(holder.result(), 10_000, "hold to stop");
  assert.equal(result.status.signal, "SIGINT", result.stderr);
  // Released by request, not only by the connection closing.
  await server.waitFor(/released "?interrupted/, "stderr");
});
