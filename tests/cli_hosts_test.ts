// `--host` (and PKLOCK_HOST) lists servers tried in turn: with the first one
// dead (a closed port), the CLI reaches the second, and everything after
// connecting uses the server reached: try-lock's "Connected to" line, run's
// command environment and inherited connection (kill -9 of run keeps the lock
// while the command runs), hints. Real servers, real CLI processes.
import assert from "node:assert/strict";
import { parseHosts } from "../cli/connection_flags.ts";
import {
  cli,
  deadline,
  inTempDir,
  runCli,
  settingsFile,
  spawnServer,
} from "./helpers.ts";
import { killLeftover } from "./fixtures/cli_processes.ts";

/** A loopback port that nothing listens on: bound by the OS, then freed. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test({
  name: "parseHosts() reads a list of host, host:port and [ipv6]:port entries",
  permissions: "none",
  fn() {
    assert.equal(parseHosts("127.0.0.1"), "127.0.0.1");
    assert.equal(
      parseHosts(" a.example , b.example:7000,[fd00::3]:7001"),
      "a.example,b.example:7000,[fd00::3]:7001",
    );
    assert.equal(parseHosts("::1"), "[::1]", "a bare IPv6 address is a host");
    assert.equal(parseHosts("fe80::1,h"), "[fe80::1],h");
    for (const bad of ["", "a,", "a,,b", "a:99999", "a:0", "[::1", "a:b"]) {
      assert.throws(() => parseHosts(bad), Error, bad);
    }
  },
});

Deno.test("try-lock skips a dead server and says which one it reached", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const dead = closedPort();
  // The first entry uses --port (dead); the second names its own port.
  const result = await runCli([
    "try-lock",
    "job",
    "--hold",
    "0",
    "--host",
    `127.0.0.1,127.0.0.1:${port}`,
    "-p",
    String(dead),
  ]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stdout,
    new RegExp(`^Connected to 127\\.0\\.0\\.1:${port} as connection \\d+\n`),
  );
  assert.match(result.stdout, /Released lock "job"\n$/);
});

Deno.test("run reached through PKLOCK_HOST gives its command the server reached", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const dead = closedPort();
  const result = await runCli(
    ["run", "env", "--", "sh", "-c", 'echo "$PKLOCK_HOST $PKLOCK_PORT"'],
    { PKLOCK_HOST: `127.0.0.1:${dead},127.0.0.1`, PKLOCK_PORT: String(port) },
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, `127.0.0.1 ${port}\n`);
});

Deno.test("kill -9 of run reached on the second server: what the command started keeps the lock until it exits", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const dead = closedPort();
  const hosts = ["--host", `127.0.0.1,127.0.0.1:${port}`, "-p", String(dead)];
  const dir = await Deno.makeTempDir({ prefix: "pklock-hosts-" });
  const fifo = `${dir}/go`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success, "mkfifo");
  // The command dies with run; its background child waits for a line on the
  // FIFO, and keeps the lock meanwhile only if it inherited run's connection
  // to the server reached (not one to --port).
  await using runner = cli([
    "run",
    "job",
    ...hosts,
    "--",
    "sh",
    "-c",
    `(read line < "${fifo}"; echo "child done") & echo $!; wait`,
  ]);
  const child = Number((await runner.waitFor(/^(\d+)\n/))[1]);
  try {
    runner.kill("SIGKILL");
    const busy = await runCli(
      ["run", "job", "--wait", "0", ...hosts, "--", "echo", "got in"],
    );
    assert.equal(busy.code, 3, `held while the child runs: ${busy.stderr}`);
    await Deno.writeTextFile(fifo, "go\n");
    const result = await deadline(runner.result(), 10_000, "the child to end");
    assert.match(result.stdout, /child done\n$/);
    const free = await runCli(
      ["run", "job", "--wait", "10", ...hosts, "--", "echo", "got in"],
    );
    assert.equal(free.code, 0, free.stderr);
    assert.equal(free.stdout, "got in\n");
  } finally {
    killLeftover(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("status with every server dead names each of them and exits 4", async () => {
  const [first, second] = [closedPort(), closedPort()];
  const result = await runCli([
    "status",
    "--host",
    `127.0.0.1:${first},127.0.0.1:${second}`,
  ]);
  assert.equal(result.code, 4, result.stderr);
  assert.match(
    result.stderr,
    new RegExp(
      `^pklock: Cannot connect to any of 2 servers: .*127\\.0\\.0\\.1:${first}.*; .*127\\.0\\.0\\.1:${second}.* \\(is pklock serve running there\\? .*\n$`,
    ),
  );
});

Deno.test("a bad --host entry is a usage error, and nothing is tried", async () => {
  const result = await runCli(["status", "--host", "127.0.0.1,,b"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--host.*none empty/);
});

Deno.test("a hint at connecting names the servers tried", async () => {
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, "0123456789abcdef0123\n");
    const config = await settingsFile(dir, { auth: { secretFile } });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const dead = closedPort();
    const result = await runCli(
      ["status", "--host", `127.0.0.1:${dead},127.0.0.1:${port}`],
    );
    assert.equal(result.code, 4, result.stderr);
    assert.equal(
      result.stderr,
      `pklock: The server at one of 127.0.0.1:${dead}, 127.0.0.1:${port} requires authentication: give its shared secret with --secret-file FILE or PKLOCK_SECRET\n`,
    );
  });
});
