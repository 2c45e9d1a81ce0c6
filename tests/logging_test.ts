// The server's log: JSON logs, one object a line, and a server whose
// standard error is gone keeps serving.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import {
  deadline,
  inTempDir,
  RawClient,
  settingsFile,
  spawnServer,
} from "./helpers.ts";
import { WAIT_MS } from "./events.ts";

const LEVELS = new Set(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]);

Deno.test("serve with log format json writes every stderr line as one JSON object", async () => {
  await inTempDir(async (dir) => {
    const config = await settingsFile(dir, {
      log: { level: "debug", format: "json" },
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    {
      await using client = await connect({ port, label: "json test" });
      await (await client.lock("json-logged")).release();
    }
    await server.waitFor(/peer_closed/, "stderr");
    server.kill("SIGTERM");
    const result = await deadline(server.result(), WAIT_MS, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stderr.endsWith("\n"), result.stderr);
    const records = result.stderr.slice(0, -1).split("\n").map((line) => {
      const record = JSON.parse(line) as Record<string, unknown>;
      const timestamp = record["@timestamp"] as string;
      assert.equal(new Date(timestamp).toISOString(), timestamp, line);
      assert.ok(LEVELS.has(record.level as string), line);
      assert.match(record.logger as string, /^pklock(\.|$)/, line);
      assert.equal(typeof record.message, "string", line);
      assert.equal(typeof record.properties, "object", line);
      return record;
    });
    const find = (message: RegExp) =>
      records.find((record) => message.test(record.message as string));
    const granted = find(/^Granted "json-logged" to connection \d+/);
    assert.equal(granted?.level, "DEBUG");
    assert.equal(granted?.logger, "pklock.server");
    assert.equal(
      (granted?.properties as { name: string }).name,
      "json-logged",
    );
    assert.equal(find(/^Connection \d+ opened from/)?.level, "DEBUG");
    assert.equal(
      find(/^Connection \d+ released "json-logged"/)?.level,
      "DEBUG",
    );
    const stopping = find(/^Received "SIGTERM"/);
    assert.equal(stopping?.level, "INFO");
    assert.deepEqual(stopping?.properties, { signal: "SIGTERM" });
  });
});

Deno.test("a server whose standard error is gone keeps serving", async () => {
  const fixture = new URL("./fixtures/log_without_stderr.ts", import.meta.url)
    .pathname;
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fixture],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.equal(code, 0);
  assert.equal(new TextDecoder().decode(stdout), "still here\n");
});

Deno.test("a connection that dies holding three locks gets one info line naming them, not one line per lock", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  {
    await using client = await connect({ port, label: "many" });
    for (const name of ["log-a", "log-b", "log-c"]) await client.lock(name);
  }
  const [line] = await server.waitFor(
    /.*Released 3 lock\(s\) held by connection \d+ from "127\.0\.0\.1:\d+" \("many"\): connection closed \("peer_closed"\): .*\n/,
    "stderr",
  );
  assert.match(line!, /\[INF\]/);
  assert.match(line!, /"log-a", "log-b", "log-c"/);
  server.kill("SIGTERM");
  const result = await deadline(server.result(), WAIT_MS, "the server exit");
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr.match(/Released/g)?.length, 1, result.stderr);
});

Deno.test("log level warn, in settings or --log-level, writes warnings and not info lines", async (t) => {
  const expectWarningsOnly = async (
    dir: string,
    settings: object,
    args: string[],
  ) => {
    const auth = { secret: "a secret of sixteen chars" };
    const config = await settingsFile(dir, { ...settings, auth });
    const { process: server, port } = await spawnServer([
      "--config",
      config,
      ...args,
    ]);
    await using _server = server;
    {
      // A request before hello is refused: a warning.
      await using raw = await RawClient.connect(port);
      await raw.request({ command: "ping", id: 1 });
    }
    await server.waitFor(/WRN.*refused: "auth_required"/, "stderr");
    server.kill("SIGTERM");
    const result = await deadline(server.result(), WAIT_MS, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    // SIGTERM's "Received ..." line is info: below the level.
    assert.doesNotMatch(result.stderr, /Received "SIGTERM"/);
  };
  await t.step(
    "--log-level warn",
    () =>
      inTempDir((dir) => expectWarningsOnly(dir, {}, ["--log-level", "warn"])),
  );
  await t.step(
    "settings log.level warn",
    () =>
      inTempDir((dir) =>
        expectWarningsOnly(dir, { log: { level: "warn" } }, [])
      ),
  );
});

Deno.test("a burst of refused peers from one address writes one warning, not one per connection", async () => {
  await inTempDir(async (dir) => {
    const config = await settingsFile(dir, { allowed: ["192.0.2.1"] });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    for (let i = 0; i < 100; i++) {
      // Refused at once: the server closes without a byte.
      const conn = await Deno.connect({ port });
      const read = await conn.read(new Uint8Array(1)).catch(() => null);
      assert.equal(read, null);
      conn.close();
    }
    server.kill("SIGTERM");
    const result = await deadline(server.result(), WAIT_MS, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    // Before, each refusal wrote its own line: 100 lines.
    const lines = result.stderr.match(/Refused connection from .*\n/g) ?? [];
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, /"127\.0\.0\.1:\d+": not in the allow-list\n/);
  });
});
