// The pklock command as users run it: real child processes over real TCP.
import assert from "node:assert/strict";
import { cli, deadline, MAIN, runCli, spawnServer } from "./helpers.ts";
import { connect } from "../mod.ts";

async function settingsFile(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".jsonc" });
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("serve starts from a commented settings file and try-lock takes the lock", async () => {
  const path = await settingsFile(`{
    // comments and trailing commas are fine
    "host": "127.0.0.1",
    "port": 0,
    "allowed": ["127.0.0.1", "::1", "10.0.0.0/8",],
    "limits": { "maxFrameBytes": 4096 },
    "log": { "level": "debug" },
  }`);
  try {
    const { process: server, port } = await spawnServer(["--config", path]);
    await using _server = server;
    const result = await runCli([
      "try-lock",
      "cfg",
      "--port",
      String(port),
      "--hold",
      "0",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /Got lock "cfg" \(token 1\); holding it for 0 s\n/,
    );
    await server.waitFor(/Granted "cfg" to connection \d+/, "stderr");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("try-lock copies started together take turns in FIFO order", async () => {
  const { process: server, port } = await spawnServer(["--log-level", "debug"]);
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("demo");
  const args = ["try-lock", "demo", "--port", String(port), "--hold", "0"];
  const copies = [];
  for (let i = 0; i < 3; i++) {
    copies.push(cli(args));
    await server.waitFor(/waits for "demo"/, "stderr");
  }
  await lock.release();
  const results = await Promise.all(copies.map((copy) => copy.result()));
  results.forEach((result, i) => {
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout.replace(/connection \d+/, "connection N"),
      `Connected to 127.0.0.1:${port} as connection N
Asking for lock "demo"
Got lock "demo" (token ${i + 2}); holding it for 0 s
Offering to unlock "demo"
Released lock "demo"
`,
    );
  });
});

Deno.test("try-lock --wait gives up with exit code 3 while the lock is held", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("busy");
  for (const wait of ["0", "0.05"]) {
    const result = await runCli([
      "try-lock",
      "busy",
      "--port",
      String(port),
      "--wait",
      wait,
    ]);
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stdout, /Did not get lock "busy"/);
  }
  await lock.release();
});

Deno.test("try-lock without a server exits with code 4 and says why", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const result = await runCli(["try-lock", "x", "--port", String(port)]);
  assert.equal(result.code, 4);
  assert.match(
    result.stderr,
    new RegExp(`Cannot connect to 127\\.0\\.0\\.1:${port}`),
  );
});

Deno.test("--help and --version exit 0; bad usage exits 2", async () => {
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /serve/);
  assert.match(help.stdout, /try-lock/);
  for (const command of ["serve", "try-lock"]) {
    const sub = await runCli([command, "--help"]);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, new RegExp(`Usage: pklock ${command}`));
  }
  const version = await runCli(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  for (
    const args of [
      ["try-lock"],
      ["try-lock", "x", "--hold", "soon"],
      ["serve", "--port", "70000"],
      ["serve", "--log-level", "loud"],
      ["frobnicate"],
    ]
  ) {
    const result = await runCli(args);
    assert.equal(result.code, 2, args.join(" "));
    assert.notEqual(result.stderr, "");
  }
});

for (
  const [label, text, problem] of [
    [
      "invalid JSONC",
      '{ "port": 20934, }}',
      /line 1, column 19: end of file expected/,
    ],
    [
      "an unknown key",
      '{\n  "prot": 1\n}',
      /line 2, column 3: unknown key "prot"/,
    ],
    [
      "an unknown nested key",
      '{ "limits": { "maxFrames": 1 } }',
      /unknown key "limits\.maxFrames"/,
    ],
    [
      "a wrong type",
      '{\n  "port": "20934"\n}',
      /line 2, column 11: "port" expected number, received string/,
    ],
    ["an out-of-range port", '{ "port": 70000 }', /"port" .*65535/],
    [
      "a bad allow-list entry",
      '{ "allowed": ["10.0.0.0/33"] }',
      /"allowed\.0" "10\.0\.0\.0\/33" has an invalid prefix length/,
    ],
    ["not an object", "[]", /expected object/],
  ] as const
) {
  Deno.test(`serve refuses a settings file with ${label}`, async () => {
    const path = await settingsFile(text);
    try {
      const result = await runCli(["serve", "--config", path]);
      assert.equal(result.code, 5);
      assert.ok(result.stderr.includes(`"${path}"`), result.stderr);
      assert.match(result.stderr, problem);
      assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    } finally {
      await Deno.remove(path);
    }
  });
}

Deno.test("serve refuses a settings file it cannot read", async () => {
  const path = await Deno.makeTempDir();
  await Deno.remove(path);
  const result = await runCli(["serve", "--config", `${path}/missing.jsonc`]);
  assert.equal(result.code, 5);
  assert.match(result.stderr, /Cannot read settings file ".*missing\.jsonc"/);
});

Deno.test("serve refuses a port already in use", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dir = await Deno.makeTempDir({ prefix: "pklock-test-" });
  try {
    const path = `${dir}/settings.jsonc`;
    await Deno.writeTextFile(
      path,
      `{ "port": ${listener.addr.port}, "stateFile": "${dir}/state.json" }`,
    );
    const result = await runCli(["serve", "--config", path]);
    assert.equal(result.code, 5);
    assert.match(
      result.stderr,
      new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${listener.addr.port}`),
    );
    assert.ok(result.stderr.includes(path));
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve logs a connection refused by the allow-list", async () => {
  const path = await settingsFile('{ "allowed": ["10.0.0.1"] }');
  try {
    const { process: server, port } = await spawnServer(["--config", path]);
    await using _server = server;
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await server.waitFor(
        /Refused connection from "127\.0\.0\.1:\d+": not in the allow-list/,
        "stderr",
      );
    } finally {
      conn.close();
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("serve exits 0 on SIGTERM after closing its connections", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using client = await connect({ port });
  const lock = await client.lock("until-shutdown");
  server.kill("SIGTERM");
  const result = await server.result();
  assert.equal(result.code, 0, result.stderr);
  await client.closed;
  assert.equal(lock.lost.aborted, true);
});

Deno.test("on a terminal, a waiting try-lock shows its place in the queue as it moves", async () => {
  const { process: server, port } = await spawnServer(["--log-level", "debug"]);
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("tty");
  await using first = await connect({ port });
  const ahead = first.lock("tty");
  await first.ping();
  // script(1) gives the command a pseudo-terminal, as a person's shell would.
  const command =
    `${Deno.execPath()} run -A ${MAIN} try-lock tty --port ${port} --hold 0`;
  const child = new Deno.Command("script", {
    args: ["-qefc", command, "/dev/null"],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let screen = "";
  const waitFor = async (pattern: RegExp) => {
    while (!pattern.test(screen)) {
      const { value, done } = await deadline(
        reader.read(),
        30_000,
        `${pattern}`,
      );
      if (done) throw new Error(`try-lock ended before ${pattern}: ${screen}`);
      screen += value;
    }
  };
  try {
    await waitFor(/Waiting for lock "tty": 1 ahead/);
    await lock.release();
    const second = await ahead;
    await waitFor(/Waiting for lock "tty": next in line/);
    await second.release();
    await waitFor(/Got lock "tty" \(token \d+\)/);
    await waitFor(/Released lock "tty"/);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    await child.stdin.close().catch(() => {});
  }
});
