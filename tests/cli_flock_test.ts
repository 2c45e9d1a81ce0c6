// `pklock run` reads its command line as flock(1) does, so that a crontab
// ports by changing one word: real CLI processes against a real server.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { runCli, spawnServer } from "./helpers.ts";

Deno.test("the command's arguments are the command's, even when they look like pklock's", async (t) => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  const p = String(port);
  await t.step("-p in the command is not the server's port", async () => {
    const result = await runCli(
      ["run", "-p", p, "job", "printf", "[%s]\\n", "a", "-p", "27111", "b"],
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "[a]\n[-p]\n[27111]\n[b]\n");
  });
  await t.step(
    "--shared and --wait 0 in the command are not pklock's",
    async () => {
      const result = await runCli([
        "run",
        "-p",
        p,
        "job",
        "sh",
        "-c",
        'echo "$PKLOCK_MODE" "$@"',
        "sh",
        "--shared",
        "--wait",
        "0",
      ]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, "exclusive --shared --wait 0\n");
    },
  );
  await t.step(
    "options between NAME and the command, with or without --",
    async () => {
      for (const separator of [["--"], []]) {
        const result = await runCli([
          "run",
          "job",
          "-p",
          p,
          "--wait",
          "60",
          "--shared",
          ...separator,
          "sh",
          "-c",
          'echo "$PKLOCK_MODE"',
        ]);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, "shared\n");
      }
    },
  );
});

Deno.test("flock's spelling works: -n and -w are silent on conflict unless --verbose", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("cron");
  const p = String(port);
  const quiet = await runCli(["run", "-n", "cron", "-p", p, "echo", "ran"]);
  assert.deepEqual(quiet, { code: 3, stdout: "", stderr: "" });
  const flockCode = await runCli(
    ["run", "-n", "-E", "1", "cron", "-p", p, "-c", "echo ran"],
  );
  assert.deepEqual(flockCode, { code: 1, stdout: "", stderr: "" });
  const timeout = await runCli(["run", "-w", "0.2", "cron", "-p", p, "true"]);
  assert.deepEqual(timeout, { code: 3, stdout: "", stderr: "" });
  const verbose = await runCli(
    ["run", "-n", "--verbose", "cron", "-p", p, "true"],
  );
  assert.equal(verbose.code, 3);
  assert.equal(
    verbose.stderr,
    'pklock: Cannot acquire lock "cron": it is held by another client\n',
  );
  // pklock's own spelling says why, as before.
  const spoken = await runCli(["run", "--wait", "0", "cron", "-p", p, "true"]);
  assert.equal(spoken.code, 3);
  assert.match(spoken.stderr, /held by another client/);
  await lock.release();
});

Deno.test("flock's -s, -x and -c: shared alongside a shared holder, a shell command", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("readers", { mode: "shared" });
  const p = String(port);
  const shared = await runCli(
    [
      "run",
      "-s",
      "-n",
      "readers",
      "-p",
      p,
      "-c",
      'echo "$PKLOCK_MODE $PKLOCK_LOCK"',
    ],
  );
  assert.equal(shared.code, 0, shared.stderr);
  assert.equal(shared.stdout, "shared readers\n");
  const exclusive = await runCli(
    ["run", "-x", "-n", "readers", "-p", p, "-c", "echo ran"],
  );
  assert.equal(exclusive.code, 3);
  assert.equal(exclusive.stdout, "");
  await lock.release();
  const both = await runCli(["run", "-s", "-x", "readers", "-p", p, "true"]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /cannot be used with/);
});

Deno.test("run needs exactly one of a command and -c", async () => {
  for (
    const args of [["run", "job"], ["run", "job", "-c", "true", "echo", "x"]]
  ) {
    const result = await runCli(args);
    assert.equal(result.code, 2, result.stderr);
    assert.match(
      result.stderr,
      /run needs a command after the lock's name, or -c/,
    );
  }
});

Deno.test("durations take units where a user would write them", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  for (const wait of ["90s", "1m", "2h", "1.5", "500ms"]) {
    const result = await runCli(
      ["run", "--wait", wait, "units", "-p", String(port), "true"],
    );
    assert.equal(result.code, 0, `--wait ${wait}: ${result.stderr}`);
  }
  for (
    const [flag, value] of [["--wait", "1x"], ["-w", "soon"], [
      "--kill-after",
      "-1",
    ], ["--wait", "30d"]]
  ) {
    const result = await runCli(["run", flag!, value!, "units", "true"]);
    assert.equal(result.code, 2, `${flag} ${value}`);
    assert.match(
      result.stderr,
      /argument .* is invalid\. expected (a duration|at most)/,
    );
  }
});
