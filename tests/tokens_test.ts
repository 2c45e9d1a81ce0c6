// Fencing tokens survive the server process: a new server on the same state
// file issues tokens above every token the old one issued, whether the old one
// shut down cleanly or was killed with kill -9.
import assert from "node:assert/strict";
import { connect, type LockClient } from "../mod.ts";
import { delay, writeAll } from "../message/io.ts";
import { remote } from "./assertions.ts";
import { WAIT_MS } from "./events.ts";
import {
  deadline,
  inTempDir,
  RawClient,
  runCli,
  spawnServer,
} from "./helpers.ts";
import { ask, concat, errorCode, frameOf, nextOf } from "./wire.ts";

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

/**
 * What a failing disk does to a running server, end to end: the holder and
 * the waiter of lock "kept" are served, churn on another lock is refused with
 * `tokens_unavailable` once the tokens left cover only the waiter, and grants
 * resume once `repair` lets a reservation succeed. Before, the server exited
 * 1 at the 10,001st grant and every holder lost its lock.
 */
async function fullDiskScenario(
  state: string,
  breakDisk: () => Promise<void>,
  repair: () => Promise<void>,
): Promise<void> {
  const { process: server, port } = await spawnServer(["--state-file", state]);
  await using _server = server;
  await using holder = await connect({ port });
  await using waiter = await connect({ port });
  await using churn = await connect({ port });
  const kept = await holder.lock("kept");
  const waiting = waiter.lock("kept");
  await waiter.ping();
  await breakDisk();
  let granted = 0;
  let refusal: unknown;
  while (refusal === undefined) {
    try {
      const lock = await churn.lock("churn");
      granted++;
      await lock.release();
    } catch (error) {
      refusal = error;
    }
  }
  assert.ok(remote("tokens_unavailable")(refusal), String(refusal));
  // Token 1 went to the holder; the last one reserved waits for the waiter.
  assert.equal(granted, 10_000 - 2);
  await server.waitFor(/Cannot reserve fencing tokens/, "stderr");
  await churn.ping();
  assert.equal(kept.lost.aborted, false);
  await assert.rejects(churn.tryLock("other"), remote("tokens_unavailable"));
  await kept.release();
  const handedOver = await deadline(waiting, WAIT_MS, "the waiter's grant");
  assert.equal(handedOver.token, 10_000);
  await repair();
  // The store retries with a backoff of at most 10 s: a client retries too.
  const resumed = await deadline(
    (async () => {
      while (true) {
        try {
          return await churn.lock("churn");
        } catch (error) {
          if (!remote("tokens_unavailable")(error)) throw error;
          await delay(100);
        }
      }
    })(),
    30_000,
    "a grant once the disk has room again",
  );
  assert.ok(resumed.token > 10_000);
  assert.equal(handedOver.lost.aborted, false);
}

Deno.test("a server that cannot reserve more tokens refuses new requests with tokens_unavailable, keeps every holder and waiter, and resumes", async () => {
  await inTempDir(async (dir) => {
    const state = `${dir}/state.json`;
    // The next reservation writes `${state}.tmp` first: a folder there makes
    // it fail, whoever runs the test (root ignores file permissions).
    await fullDiskScenario(
      state,
      () => Deno.mkdir(`${state}.tmp`),
      () => Deno.remove(`${state}.tmp`),
    );
  });
});

Deno.test("a waiter whose turn comes when no token can be had waits first in line, and is granted once a reservation succeeds, the server staying up", async () => {
  await inTempDir(async (dir) => {
    const state = `${dir}/state.json`;
    const { process: server, port } = await spawnServer([
      "--state-file",
      state,
    ]);
    await using _server = server;
    // Half a block of locks, each with a waiter: when the reservation made
    // at the next grant fails, the waiters outnumber the tokens left by one.
    const names = Array.from({ length: 5_000 }, (_, i) => `n${i}`);
    const lockFrames = (first: number) =>
      concat(names.map((lockName, i) =>
        frameOf(JSON.stringify({
          command: "lock",
          parameters: { lockName },
          id: first + i,
        }))
      ));
    await using holder = await RawClient.connect(port);
    await holder.write(lockFrames(0));
    for (const _ of names) {
      assert.equal((await nextOf(holder))?.error, undefined);
    }
    await using waiter = await RawClient.connect(port);
    await waiter.write(lockFrames(0));
    assert.equal((await ask(waiter, { command: "ping", id: -1 }))?.id, -1);
    // The next reservation writes `${state}.tmp` first: a folder there
    // makes it fail, whoever runs the test.
    await Deno.mkdir(`${state}.tmp`);
    const last = await ask(holder, {
      command: "lock",
      parameters: { lockName: "half" },
      id: 5_000,
    });
    assert.deepEqual(last?.result, { status: "ok", token: 5_001 });
    await server.waitFor(/Cannot reserve fencing tokens/, "stderr");
    // The holder's death hands 5,000 locks over with 4,999 tokens left.
    await holder.close();
    for (let i = 0; i < names.length - 1; i++) {
      const grant = await nextOf(waiter);
      assert.deepEqual(grant, {
        id: i,
        result: { status: "ok", token: 5_002 + i },
      });
    }
    // The last waits first in line; the server still answers, and refuses
    // what it could not grant.
    assert.equal(
      errorCode(
        await ask(waiter, {
          command: "lock",
          parameters: { lockName: "new" },
          id: 6_000,
        }),
      ),
      "tokens_unavailable",
    );
    await Deno.remove(`${state}.tmp`);
    // The store retries with a backoff of at most 10 s.
    assert.deepEqual(
      await deadline(waiter.next(), 30_000, "the last waiter's grant"),
      { id: names.length - 1, result: { status: "ok", token: 10_001 } },
    );
  });
});

Deno.test({
  name:
    "on a full filesystem (a tiny tmpfs), the server refuses new requests with tokens_unavailable, keeps its holders, and resumes once there is room",
  ignore: !await canMountTmpfs(),
  async fn() {
    await inTempDir(async (dir) => {
      await mount(dir);
      try {
        const filler = `${dir}/filler`;
        await fullDiskScenario(
          `${dir}/state.json`,
          () => fill(filler),
          () => Deno.remove(filler),
        );
      } finally {
        await run("umount", [dir]);
      }
    });
  },
});

async function run(command: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, {
      args,
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

function mount(dir: string): Promise<boolean> {
  return run("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]);
}

/** Whether this process may mount a tmpfs (root, outside a tight sandbox). */
async function canMountTmpfs(): Promise<boolean> {
  if (Deno.uid() !== 0) return false;
  return await inTempDir(async (dir) => {
    if (!await mount(dir)) return false;
    return await run("umount", [dir]);
  });
}

/** Writes to `path` until the filesystem is full. */
async function fill(path: string): Promise<void> {
  using file = await Deno.open(path, { write: true, create: true });
  const chunk = new Uint8Array(4096);
  try {
    while (true) await writeAll(file, chunk);
  } catch (error) {
    if (!(error instanceof Error) || !/No space left/.test(error.message)) {
      throw error;
    }
  }
}
