// `pklock run` as the main process of a systemd service: a stop with systemd's
// default KillMode=control-group signals every process of the unit, so run
// must not pass that signal on again; with KillMode=mixed, or a signal sent
// to run alone, it must. systemd itself does not run here (PID 1 is not
// systemd): each test puts run in a real cgroup named like a unit, in the
// hierarchy systemd keeps, sets INVOCATION_ID as systemd does, answers
// `systemctl show` with a stand-in on PATH, and signals the way systemd's
// stop does (every process of the cgroup, or run alone).
import assert from "node:assert/strict";
import { deadline, spawnServer } from "./helpers.ts";
import { delay } from "../message/io.ts";
import { GroupLeader, pklockArgv } from "./fixtures/cli_processes.ts";

/** Where systemd keeps its cgroups here: v1's name=systemd, else v2's root. */
const HIERARCHY = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup"].find((dir) => {
  try {
    return Deno.statSync(`${dir}/cgroup.procs`).isFile;
  } catch {
    return false;
  }
});
const WHY_NOT = HIERARCHY === undefined
  ? "no cgroup hierarchy of systemd's is mounted"
  : Deno.uid() !== 0
  ? "making a cgroup needs root"
  : undefined;
if (WHY_NOT) console.log(`cli_systemd_test: skipped: ${WHY_NOT}`);

/** A cgroup named like a service unit, and a `systemctl` that describes it. */
class StandInUnit implements AsyncDisposable {
  readonly name = `pklock-test-${crypto.randomUUID().slice(0, 8)}.service`;
  readonly cgroup = `${HIERARCHY}/${this.name}`;
  readonly #dir: string;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  static async create(state: Record<string, string>): Promise<StandInUnit> {
    const unit = new StandInUnit(await Deno.makeTempDir());
    await Deno.mkdir(unit.cgroup);
    const shown = Object.entries(state).map(([k, v]) => `${k}=${v}\n`);
    await Deno.writeTextFile(`${unit.#dir}/state`, shown.join(""));
    await Deno.writeTextFile(
      `${unit.#dir}/systemctl`,
      `#!/bin/sh\necho "$*" >> '${unit.#dir}/asked'\ncat '${unit.#dir}/state'\n`,
      { mode: 0o755 },
    );
    return unit;
  }

  /** What systemd gives a service's processes. */
  get env(): Record<string, string> {
    return {
      INVOCATION_ID: crypto.randomUUID().replaceAll("-", ""),
      PATH: `${this.#dir}:${Deno.env.get("PATH")}`,
    };
  }

  /** `argv`, started inside the unit's cgroup. */
  wrap(argv: string[]): string[] {
    const join = 'echo $$ > "$0/cgroup.procs" && exec "$@"';
    return ["sh", "-c", join, this.cgroup, ...argv];
  }

  /** Every process in the unit, as systemd's stop finds them. */
  async pids(): Promise<number[]> {
    const text = await Deno.readTextFile(`${this.cgroup}/cgroup.procs`);
    return text.split("\n").filter(Boolean).map(Number);
  }

  /** What `systemctl` was asked. */
  async asked(): Promise<string> {
    return await Deno.readTextFile(`${this.#dir}/asked`).catch(() => "");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const pid of await this.pids().catch(() => [])) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    for (let tries = 0; tries < 50; tries++) {
      try {
        await Deno.remove(this.cgroup);
        break;
      } catch {
        // Busy until the killed are reaped.
        await delay(20);
      }
    }
    await Deno.remove(this.#dir, { recursive: true });
  }
}

// Counts SIGTERMs; SIGUSR2, passed on after them, makes it report.
const COUNTING = "n=0; trap 'n=$((n+1)); echo TERM $n' TERM; " +
  "trap 'done=1' USR2; echo ready; " +
  'while [ -z "$done" ]; do sleep 0.05; done; echo "count $n"';

/**
 * Runs the counting command under `pklock run` in a stand-in unit, stops it
 * as systemd would with `state` (SIGTERM to `whom`), then has it report.
 */
async function stopUnit(
  state: Record<string, string>,
  whom: "every process" | "run",
): Promise<{ stdout: string; stderr: string; asked: string; name: string }> {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using unit = await StandInUnit.create({
    KillSignal: "15",
    SendSIGHUP: "no",
    ...state,
  });
  const argv = pklockArgv([
    "run",
    "job",
    "-p",
    String(port),
    "--verbose",
    "--",
    "sh",
    "-c",
    COUNTING,
  ]);
  await using runner = new GroupLeader(unit.wrap(argv), false, unit.env);
  await runner.waitFor(/ready\n/);
  const targets = whom === "run" ? [runner.pid] : await unit.pids();
  assert.ok(targets.includes(runner.pid), "run is in the unit");
  for (const pid of targets) Deno.kill(pid, "SIGTERM");
  await runner.waitFor(/TERM 1\n/);
  Deno.kill(runner.pid, "SIGUSR2");
  const result = await deadline(runner.result(), 10_000, "run to exit");
  assert.equal(result.status.code, 0, result.stderr);
  return { ...result, asked: await unit.asked(), name: unit.name };
}

Deno.test({
  name:
    "KillMode=control-group: systemd's stop signals every process of the unit, and the command sees SIGTERM once",
  ignore: WHY_NOT !== undefined,
  async fn() {
    const { stdout, stderr, asked, name } = await stopUnit(
      { KillMode: "control-group", ActiveState: "deactivating" },
      "every process",
    );
    assert.equal(stdout, "ready\nTERM 1\ncount 1\n", stderr);
    assert.match(
      stderr,
      /systemd sent SIGTERM to every process of pklock-test-\w+\.service \(KillMode=control-group\); not passed on again/,
    );
    assert.match(asked, new RegExp(`show --property=KillMode,.* -- ${name}`));
  },
});

Deno.test({
  name:
    "KillMode=mixed, or an operator's kill of run while the unit runs: run passes SIGTERM on once",
  ignore: WHY_NOT !== undefined,
  async fn() {
    for (
      const state of [
        { KillMode: "mixed", ActiveState: "deactivating" },
        { KillMode: "control-group", ActiveState: "active" },
      ]
    ) {
      const { stdout, stderr, asked } = await stopUnit(state, "run");
      assert.equal(stdout, "ready\nTERM 1\ncount 1\n", stderr);
      assert.doesNotMatch(stderr, /not passed on again/);
      assert.match(asked, /show --property=KillMode/, "systemd was asked");
    }
  },
});
