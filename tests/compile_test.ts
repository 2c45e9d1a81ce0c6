// `deno task compile` builds one pklock executable. Building needs Deno's
// runtime (denort), downloaded on first use or taken from DENORT_BIN; where
// neither works, the test is skipped with the reason printed.
import assert from "node:assert/strict";
import { MAIN, ROOT, taskV8Flags } from "./helpers.ts";
import {
  assertNoInspector,
  sendUsr1WhenArmed,
} from "./fixtures/cli_processes.ts";

Deno.test("the compiled executable gets the V8 flags deno task serve uses", async () => {
  const serve = await taskV8Flags("serve");
  assert.ok(
    serve.includes("--v8-flags=--max-semi-space-size=2"),
    `serve task flags: ${serve}`,
  );
  assert.deepEqual(await taskV8Flags("compile"), serve);
});

const dir = await Deno.makeTempDir({ prefix: "pklock-compile-" });
const binary = `${dir}/pklock`;
const build = await new Deno.Command(Deno.execPath(), {
  args: [
    "compile",
    ...await taskV8Flags("compile"),
    "--allow-all",
    "--output",
    binary,
    MAIN,
  ],
  cwd: ROOT,
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
const buildError = new TextDecoder().decode(build.stderr);
const unavailable = !build.success &&
  /dl\.deno\.land|denort|error sending request/.test(buildError);
if (unavailable) {
  console.log(
    `compile_test: skipped: deno compile cannot get its runtime here (set DENORT_BIN to a denort binary): ${
      buildError.split("\n").find((line) => line.includes("error sending")) ??
        buildError.trim().split("\n").at(-1)
    }`,
  );
}

async function run(args: string[]): Promise<{ code: number; stdout: string }> {
  const result = await new Deno.Command(binary, { args, stdout: "piped" })
    .output();
  return {
    code: result.code,
    stdout: new TextDecoder().decode(result.stdout),
  };
}

Deno.test({
  name:
    "the compiled pklock executable serves, ignores SIGUSR1 (no inspector opens) and takes a lock",
  ignore: unavailable,
  async fn() {
    try {
      assert.ok(build.success, buildError);
      const version = await run(["--version"]);
      assert.equal(version.code, 0);
      const server = new Deno.Command(binary, {
        args: ["serve", "--port", "0"],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      try {
        const reader = server.stdout.pipeThrough(new TextDecoderStream())
          .getReader();
        let out = "";
        while (!/listening on .*:\d+\n/.test(out)) {
          const { value, done } = await reader.read();
          assert.ok(!done, `server exited early: ${out}`);
          out += value;
        }
        reader.releaseLock();
        const port = out.match(/:(\d+)\n/)![1]!;
        // The executable ignores SIGUSR1 as `deno run` does: no inspector.
        await sendUsr1WhenArmed(server.pid);
        const lock = await run([
          "try-lock",
          "x",
          "--port",
          port,
          "--hold",
          "0",
        ]);
        assert.equal(lock.code, 0);
        assert.match(lock.stdout, /Got lock "x"/);
        assertNoInspector(server.pid, [Number(port)]);
      } finally {
        server.kill("SIGKILL");
        await server.status;
        await server.stdout.cancel().catch(() => {});
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

if (unavailable) await Deno.remove(dir, { recursive: true });
