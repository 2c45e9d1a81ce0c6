// Forced release by an operator with the admin secret: the holder is told
// why and its connection closes, the next waiter is granted; without the
// secret nothing happens to the lock.
import assert from "node:assert/strict";
import { connect, LockLostError } from "../mod.ts";
import { remote } from "./assertions.ts";
import { lost, WAIT_MS } from "./events.ts";
import {
  ADMIN_SECRET,
  deadline,
  inTempDir,
  RawClient,
  runCli,
  settingsFile,
  spawnServer,
  startServer,
} from "./helpers.ts";
import { parseExposition } from "./prometheus.ts";
import { errorCode } from "./wire.ts";
import { delay } from "../message/io.ts";
import type { Message } from "../protocol/frame.ts";

Deno.test("forceRelease on a server without an admin secret is refused with admin_disabled and the lock stays held", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using operator = await connect({ port });
  const lock = await holder.lock("kept");
  await assert.rejects(
    operator.forceRelease("kept", ADMIN_SECRET),
    remote("admin_disabled"),
  );
  assert.equal(await operator.tryLock("kept"), null);
  assert.equal(lock.held, true);
  assert.equal(operator.signal.aborted, false);
  await lock.release();
});

Deno.test("forceRelease with a wrong admin secret gets auth_failed, closes that connection and leaves the lock held", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET });
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using operator = await connect({ port });
  await using bystander = await connect({ port });
  const lock = await holder.lock("kept");
  await assert.rejects(
    operator.forceRelease("kept", "not the admin secret"),
    remote("auth_failed"),
  );
  const closed = await deadline(operator.closed, WAIT_MS, "the close");
  assert.equal(closed.reason, "peer_closed");
  assert.equal(await bystander.tryLock("kept"), null);
  assert.equal(lock.held, true);
  await lock.release();
});

Deno.test("forceRelease with the admin secret fires the holder's lost signal and grants the next waiter", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET, metrics: {} });
  const port = server.addr.port;
  await using holder = await connect({ port, label: "vanished host" });
  await using waiter = await connect({ port, label: "next in line" });
  await using operator = await connect({ port });
  const lock = await holder.lock("stuck");
  const next = waiter.lock("stuck");
  await waiter.ping();

  const result = await operator.forceRelease("stuck", ADMIN_SECRET);
  assert.equal(result.status, "ok");
  assert.equal(result.released?.length, 1);
  const [released] = result.released!;
  assert.equal(released!.connectionId, holder.server.connectionId);
  assert.equal(released!.token, lock.token);
  assert.equal(released!.label, "vanished host");
  assert.equal(released!.mode, "exclusive");

  const reason = await deadline(lost(lock), WAIT_MS, "the lost signal");
  assert.ok(reason instanceof LockLostError, String(reason));
  const granted = await deadline(next, WAIT_MS, "the waiter's grant");
  assert.ok(granted.token > lock.token);
  const status = await operator.status();
  const stuck = status.locks.find((entry) => entry.name === "stuck");
  assert.ok(stuck);
  assert.equal(stuck.holders.length, 1);
  assert.equal(stuck.holders[0]!.connectionId, waiter.server.connectionId);
  assert.equal(stuck.holders[0]!.label, "next in line");
  assert.deepEqual(stuck.waiters, []);

  assert.deepEqual(await operator.forceRelease("free", ADMIN_SECRET), {
    status: "notFound",
  });
  const metrics = parseExposition(await server.metrics!.render());
  assert.equal(metrics.value("pklock_releases_total", { cause: "force" }), 1);
  await granted.release();
});

Deno.test("a holder forced to release receives the forced_release event, then its connection closes", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET });
  const port = server.addr.port;
  await using raw = await RawClient.connect(port);
  const reply = await raw.request({
    command: "lock",
    parameters: { lockName: "raw-stuck" },
    id: 1,
  });
  const token = (reply?.result as { token: number }).token;
  await using operator = await connect({ port });
  await operator.forceRelease("raw-stuck", ADMIN_SECRET);
  assert.deepEqual(await deadline(raw.next(), WAIT_MS, "the event"), {
    event: "forced_release",
    lockName: "raw-stuck",
    token,
  });
  assert.equal(await deadline(raw.next(), WAIT_MS, "the close"), null);
});

Deno.test("pklock release --force frees a lock with PKLOCK_ADMIN_SECRET or --admin-secret-file, and exits 2 without --force", async (t) => {
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/admin-secret`;
    await Deno.writeTextFile(secretFile, `  ${ADMIN_SECRET}\n`);
    const config = await settingsFile(dir, { admin: { secretFile } });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const args = ["release", "cli-stuck", "--port", String(port)];

    await using first = await connect({ port, label: "vanished host" });
    const firstLock = await first.lock("cli-stuck");
    await t.step("refusals each leave the lock held", async () => {
      const [unforced, wrong, missing] = await Promise.all([
        runCli(args, { PKLOCK_ADMIN_SECRET: ADMIN_SECRET }),
        runCli([...args, "--force"], {
          PKLOCK_ADMIN_SECRET: "not the admin secret",
        }),
        runCli([...args, "--force"]),
      ]);
      assert.equal(unforced.code, 2, unforced.stderr);
      assert.match(unforced.stderr, /needs --force/);
      assert.equal(wrong.code, 1, wrong.stderr);
      assert.match(wrong.stderr, /Authentication failed/);
      assert.equal(missing.code, 2, missing.stderr);
      assert.match(missing.stderr, /PKLOCK_ADMIN_SECRET/);
      assert.equal(firstLock.lost.aborted, false);
    });

    await t.step(
      "PKLOCK_ADMIN_SECRET frees it and names the holder",
      async () => {
        const byEnv = await runCli([...args, "--force"], {
          PKLOCK_ADMIN_SECRET: ADMIN_SECRET,
        });
        assert.equal(byEnv.code, 0, byEnv.stderr);
        assert.match(
          byEnv.stdout,
          new RegExp(
            `Released lock "cli-stuck" \\(token ${firstLock.token}\\): disconnected connection ${first.server.connectionId} from 127\\.0\\.0\\.1:\\d+ \\(vanished host\\)`,
          ),
        );
        await deadline(lost(firstLock), WAIT_MS, "the first holder's loss");
      },
    );

    await t.step("--admin-secret-file frees it", async () => {
      await using second = await connect({ port });
      const secondLock = await second.lock("cli-stuck");
      const byFile = await runCli([
        ...args,
        "--force",
        "--admin-secret-file",
        secretFile,
      ]);
      assert.equal(byFile.code, 0, byFile.stderr);
      assert.match(byFile.stdout, /Released lock "cli-stuck"/);
      await deadline(lost(secondLock), WAIT_MS, "the second holder's loss");
    });

    await t.step("a free lock: nothing to release", async () => {
      const free = await runCli([...args, "--force"], {
        PKLOCK_ADMIN_SECRET: ADMIN_SECRET,
      });
      assert.equal(free.code, 0, free.stderr);
      assert.match(
        free.stdout,
        /Lock "cli-stuck" is not held; nothing to release/,
      );
    });
  });
});

Deno.test("a forced release tells the holder why it lost the lock", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET });
  await using holder = await connect({ port: server.addr.port });
  await using operator = await connect({ port: server.addr.port });
  const lock = await holder.lock("why");
  const lost = new Promise((resolve) =>
    lock.lost.addEventListener("abort", resolve, { once: true })
  );
  await operator.forceRelease("why", ADMIN_SECRET);
  await deadline(lost, WAIT_MS, "the lost signal");
  assert.ok(lock.lost.reason instanceof LockLostError);
  assert.match(
    (lock.lost.reason as Error).message,
    /^Lost lock "why": an operator forced its release$/,
  );
});

Deno.test("forcing the release of a lock the connection holds itself is refused", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET });
  await using client = await connect({ port: server.addr.port });
  const lock = await client.lock("mine");
  await assert.rejects(
    client.forceRelease("mine", ADMIN_SECRET),
    (error: Error & { code?: string }) =>
      error.code === "invalid_parameters" &&
      /release it with "release"/.test(error.message),
  );
  assert.equal(lock.held, true);
  await client.ping();
  await lock.release();
});

Deno.test("the warning of a forced release names the holder, how long it held, and who asked", async () => {
  await inTempDir(async (dir) => {
    const config = await settingsFile(dir, { admin: { secret: ADMIN_SECRET } });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    await using holder = await connect({ port, label: "stuck worker" });
    await using operator = await connect({ port, label: "on-call" });
    const lock = await holder.lock("warned");
    await operator.forceRelease("warned", ADMIN_SECRET);
    await deadline(lost(lock), WAIT_MS, "the lost signal");
    const [line] = await server.waitFor(/.*Forced release of.*\n/, "stderr");
    const holderId = holder.server.connectionId;
    const operatorId = operator.server.connectionId;
    assert.match(
      line!,
      new RegExp(
        `"warned" \\(token ${lock.token}\\) held by connection ${holderId} from "127\\.0\\.0\\.1:\\d+" \\("stuck worker"\\) for \\d+ ms, asked by connection ${operatorId} from "127\\.0\\.0\\.1:\\d+" \\("on-call"\\)`,
      ),
    );
  });
});

Deno.test("wrong admin secrets from one address are slowed down: after a failure, guesses are refused unchecked until its doubling penalty ends", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET });
  const port = server.addr.port;
  await using holder = await connect({ port });
  const lock = await holder.lock("guarded");
  /** One forceRelease on a fresh connection (a refusal closes it). */
  const force = async (adminSecret: string) => {
    await using raw = await RawClient.connect(port);
    return await raw.request({
      command: "forceRelease",
      parameters: { lockName: "guarded", adminSecret },
      id: 1,
    });
  };
  const penaltyOf = (reply: unknown) =>
    /the next is checked in (\d+) ms/.exec(
      (reply as { error?: { message?: string } }).error?.message ?? "",
    )?.[1];
  // Guessing as fast as one client can for a second: 2,127 guesses were
  // checked before; each failure now doubles the wait (100, 200, 400 ms...).
  let checked = 0, unchecked = 0;
  const end = performance.now() + 1000;
  let last: unknown;
  while (performance.now() < end) {
    last = await force(`guess ${checked + unchecked}`);
    assert.equal(errorCode(last as Message), "auth_failed");
    if (penaltyOf(last) === undefined) checked++;
    else unchecked++;
  }
  assert.ok(checked >= 1 && checked <= 5, `${checked} guesses checked`);
  assert.ok(unchecked > 0);
  // The right secret is not even checked during the penalty.
  const refused = await force(ADMIN_SECRET);
  const penalty = penaltyOf(refused);
  assert.notEqual(penalty, undefined, JSON.stringify(refused));
  assert.equal(lock.held, true);
  // Once the penalty has passed, it is.
  await delay(Number(penalty));
  const forced = await force(ADMIN_SECRET);
  assert.equal((forced?.result as { status?: string })?.status, "ok");
  await deadline(lost(lock), WAIT_MS, "the lost signal");
});

Deno.test("a client whose forceRelease meets another's penalty keeps its connection and its locks", async () => {
  await using server = startServer({ adminSecret: ADMIN_SECRET });
  const port = server.addr.port;
  await using supervisor = await connect({ port });
  const mine = await supervisor.lock("mine");
  await using holder = await connect({ port });
  await holder.lock("guarded");
  // Another process on the same address guesses once, and pays for it.
  {
    await using guesser = await RawClient.connect(port);
    const reply = await guesser.request({
      command: "forceRelease",
      parameters: { lockName: "guarded", adminSecret: "wrong" },
      id: 1,
    });
    assert.equal(errorCode(reply as Message), "auth_failed");
  }
  // The supervisor's right secret is refused unchecked, but its connection
  // and its own lock stay.
  await assert.rejects(
    supervisor.forceRelease("guarded", ADMIN_SECRET),
    remote("auth_failed"),
  );
  assert.equal(mine.held, true);
  assert.equal(mine.lost.aborted, false);
  await supervisor.ping();
});
