// Shared-secret authentication, over real TCP and real processes: hello with
// the right secret opens the connection to locks; anything else is refused
// with a reply, closes the connection, and is not acted on; the secret never
// reaches the logs.
import assert from "node:assert/strict";
import { connect, type Message } from "../mod.ts";
import { remote } from "./assertions.ts";
import {
  deadline,
  inTempDir,
  RawClient,
  runCli,
  settingsFile,
  spawnServer,
  startServer,
} from "./helpers.ts";
import { ask, errorCode, nextOf } from "./wire.ts";

const SECRET = "correct horse battery staple";

Deno.test("with a secret, hello with the right secret opens the connection to locks", async () => {
  await using server = startServer({ secret: SECRET });
  const port = server.addr.port;
  await using a = await connect({ port, secret: SECRET });
  await using b = await connect({ port, secret: SECRET });
  const lock = await a.lock("guarded");
  assert.equal(await b.tryLock("guarded"), null);
  const status = await b.status();
  assert.equal(JSON.stringify(status).includes(SECRET), false);
  await lock.release();
  await (await b.lock("guarded")).release();
});

for (
  const [label, parameters, code] of [
    ["no secret", { protocol: 1 }, "auth_required"],
    ["no parameters", undefined, "auth_required"],
    ["a wrong secret", { protocol: 1, secret: `${SECRET}!` }, "auth_failed"],
    ["a secret that is not a string", { secret: 12345 }, "auth_failed"],
  ] as const
) {
  Deno.test(`hello with ${label} gets ${code} and the connection closes`, async () => {
    await using server = startServer({ secret: SECRET });
    await using raw = await RawClient.connect(server.addr.port);
    const reply = await ask(
      raw,
      parameters === undefined
        ? { command: "hello", id: 1 }
        : { command: "hello", parameters, id: 1 },
    );
    assert.equal(reply?.id, 1);
    assert.equal(errorCode(reply), code);
    assert.equal(await nextOf(raw), null);
  });
}

Deno.test("the client library reports a missing or wrong secret as RemoteError", async () => {
  await using server = startServer({ secret: SECRET });
  const port = server.addr.port;
  await assert.rejects(connect({ port }), remote("auth_required"));
  await assert.rejects(
    connect({ port, secret: "not the secret at all" }),
    remote("auth_failed"),
  );
});

Deno.test("any request before hello gets auth_required, is not acted on, and closes the connection", async (t) => {
  await using server = startServer({ secret: SECRET });
  const port = server.addr.port;
  await using good = await connect({ port, secret: SECRET });
  const precious = await good.lock("precious");
  // Everything but how long each has held, which grows.
  const locks = async () =>
    (await good.status()).locks.map((lock) => ({
      ...lock,
      holders: lock.holders.map(({ elapsed: _, ...rest }) => rest),
    }));
  const before = await locks();
  const requests: Message[] = [
    { command: "lock", parameters: { lockName: "precious" }, id: 7 },
    { command: "lock", parameters: { lockName: "intruder" }, id: 7 },
    { command: "lock", parameters: { lockName: "intruder" } }, // legacy
    { command: "release", parameters: { lockName: "precious" }, id: 7 },
    { command: "unlock", lockName: "precious" }, // legacy
    { command: "ping", id: 7 },
    { command: "status", id: 7 },
  ];
  for (const request of requests) {
    const what = JSON.stringify(request);
    await t.step(what, async () => {
      await using raw = await RawClient.connect(port);
      const reply = await ask(raw, request);
      assert.equal(errorCode(reply), "auth_required", what);
      if (request.id === undefined) {
        assert.equal(reply?.command, request.command);
      } else {
        assert.equal(reply?.id, request.id, what);
      }
      assert.equal(reply?.result, undefined, what);
      assert.equal(await nextOf(raw), null, `closed after ${what}`);
      assert.deepEqual(await locks(), before, what);
    });
  }
  assert.equal(precious.lost.aborted, false);
  await precious.release();
});

Deno.test({
  name:
    "an unknown command or a heartbeat before hello gets auth_required and closes the connection",
  fn: async () => {
    await using server = startServer({ secret: SECRET });
    for (
      const request of [{ command: "fly", id: 1 }, { command: "heartbeat" }]
    ) {
      await using raw = await RawClient.connect(server.addr.port);
      const reply = await ask(raw, request);
      assert.equal(errorCode(reply), "auth_required", JSON.stringify(request));
      assert.equal(await nextOf(raw), null);
    }
  },
});

Deno.test("serve never writes the secret to its logs, even at debug level", async () => {
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, `  ${SECRET}\n`);
    const config = await settingsFile(dir, {
      auth: { secretFile },
      log: { level: "debug" },
    });
    const { process: server, port } = await spawnServer([
      "--config",
      config,
      "--log-level",
      "debug",
    ]);
    await using _server = server;
    // A wrong secret that contains the right one would show it if logged.
    await assert.rejects(
      connect({ port, secret: `${SECRET} but longer` }),
      remote("auth_failed"),
    );
    await server.waitFor(/refused: "?auth_failed/, "stderr");
    // A request that carries the secret where it does not belong: whatever
    // the answer, the message must not be logged.
    await using raw = await RawClient.connect(port);
    const reply = await ask(raw, { command: "fly", secret: SECRET, id: 1 });
    assert.equal(typeof errorCode(reply), "string");
    await using client = await connect({ port, secret: SECRET });
    const lock = await client.lock("logged");
    await server.waitFor(/Granted "logged"/, "stderr");
    await lock.release();
    server.kill("SIGTERM");
    const result = await deadline(server.result(), 10_000, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /Connection \d+ opened/);
    assert.equal(result.stderr.includes(SECRET), false, result.stderr);
    assert.equal(result.stdout.includes(SECRET), false, result.stdout);
  });
});

Deno.test("try-lock authenticates with --secret-file or PKLOCK_SECRET, and fails with exit code 4 without", async () => {
  await using server = startServer({ secret: SECRET });
  const port = String(server.addr.port);
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, `${SECRET}\n`);
    const args = ["try-lock", "cli-auth", "--port", port, "--hold", "0"];
    const runs = [
      [[...args, "--secret-file", secretFile], {}, 0],
      [args, { PKLOCK_SECRET: SECRET }, 0],
      // The file wins over the environment.
      [
        [...args, "--secret-file", secretFile],
        { PKLOCK_SECRET: "a wrong secret here" },
        0,
      ],
      [args, {}, 4, /authentication/i],
      [args, { PKLOCK_SECRET: "a wrong secret here" }, 4, /failed/i],
    ] as const;
    for (const [argv, env, code, stderr] of runs) {
      const result = await runCli([...argv], { ...env });
      const what = `${argv.join(" ")} ${JSON.stringify(env)}: ${result.stderr}`;
      assert.equal(result.code, code, what);
      if (code === 0) assert.match(result.stdout, /Got lock "cli-auth"/, what);
      if (stderr) assert.match(result.stderr, stderr, what);
    }
  });
});

Deno.test("with auth on, a connection that never says hello is closed after the deadline", async () => {
  await using server = startServer({ secret: SECRET, authDeadline: 100 });
  await using silent = await RawClient.connect(server.addr.port);
  const reply = await deadline(silent.next(), 5000, "the deadline's refusal");
  assert.equal((reply?.error as { code: string }).code, "auth_required");
  await deadline(silent.ended(), 5000, "the close after the refusal");
  const status = server.status();
  assert.equal(status.connections.current, 0);
});
