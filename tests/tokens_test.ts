// Fencing tokens survive the server process: a new server on the same state
// file issues tokens above every token the old one issued, whether the old one
// shut down cleanly or was killed with kill -9.
import assert from "node:assert/strict";
import { connect, type LockClient } from "../mod.ts";
import { deadline, inTempDir, runCli, spawnServer } from "./helpers.ts";

/**
 * Takes and releases locks, exclusive and shared, on several names, and
 * returns every grant's token in the order granted.
 */
async function takeGrants(client: LockClient, count: number) {
  const tokens: number[] = [];
  for (let i = 0; i < count; i++) {
    const lock = await client.lock(`job-${i % 3}`, {
      mode: i % 2 ? "shared" : "exclusive",
    });
    tokens.push(lock.token);
    await lock.release();
  }
  return tokens;
}

function assertIncreasing(tokens: number[]): void {
  for (let i = 1; i < tokens.length; i++) {
    assert.ok(tokens[i]! > tokens[i - 1]!, `tokens ${tokens.join(", ")}`);
  }
}

for (
  const [how, signal] of [
    ["a graceful restart (SIGTERM)", "SIGTERM"],
    ["kill -9 of the server", "SIGKILL"],
  ] as const
) {
  Deno.test(`tokens keep increasing across ${how}`, async () => {
    await inTempDir(async (dir) => {
      const stateFile = ["--state-file", `${dir}/state.json`];
      const issued: number[] = [];
      for (let run = 0; run < 3; run++) {
        const { process: server, port } = await spawnServer(stateFile);
        await using _server = server;
        await using client = await connect({ port });
        const tokens = await takeGrants(client, 5);
        // Every token of this run is above every token of the runs before.
        assert.ok(
          tokens[0]! > Math.max(0, ...issued),
          `run ${run} started at ${tokens[0]} after ${issued.join(", ")}`,
        );
        issued.push(...tokens);
        assertIncreasing(issued);
        // The state file covers every token issued so far.
        const state = JSON.parse(await Deno.readTextFile(`${dir}/state.json`));
        assert.ok(state.reserved >= Math.max(...issued), JSON.stringify(state));
        // Stop the server while a lock is held, as in real life.
        const held = await client.lock("held-at-stop");
        issued.push(held.token);
        server.kill(signal);
        const result = await deadline(server.result(), 10_000, "server exit");
        if (signal === "SIGTERM") assert.equal(result.code, 0, result.stderr);
        await deadline(client.closed, 10_000, "the connection to close");
        assert.equal(held.lost.aborted, true);
      }
      assertIncreasing(issued);
      assert.equal(issued.length, 18);
    });
  });
}

Deno.test("a server refuses to start on a corrupt state file and leaves it as it was", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/state.json`;
    await Deno.writeTextFile(path, '{"version":1,"reserved":-5}');
    const result = await runCli(["serve", "--port", "0", "--state-file", path]);
    assert.equal(result.code, 5);
    assert.ok(result.stderr.includes(`"${path}"`), result.stderr);
    assert.match(result.stderr, /corrupt/);
    assert.equal(await Deno.readTextFile(path), '{"version":1,"reserved":-5}');
  });
});

Deno.test("a server that cannot reserve more tokens stops, and its clients see their locks lost", async () => {
  await inTempDir(async (dir) => {
    const state = `${dir}/state.json`;
    const { process: server, port } = await spawnServer([
      "--state-file",
      state,
    ]);
    await using _server = server;
    // The next reservation writes `${state}.tmp` first: a folder there makes
    // it fail, whoever runs the test (root ignores file permissions).
    await Deno.mkdir(`${state}.tmp`);
    await using client = await connect({ port });
    let granted = 0;
    try {
      while (true) {
        const lock = await client.lock("many");
        granted++;
        await lock.release();
      }
    } catch {
      // The server stopped while issuing token 10,001.
    }
    assert.equal(granted, 10_000);
    const result = await deadline(
      server.result(),
      10_000,
      "the server to stop",
    );
    assert.equal(result.code, 1);
    assert.match(result.stderr, /Cannot reserve fencing tokens, stopping/);
    assert.equal(JSON.parse(await Deno.readTextFile(state)).reserved, 10_000);
  });
});
