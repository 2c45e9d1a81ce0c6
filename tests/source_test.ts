/**
 * The repository's own standards, checked by CI: `deno task check` is clean,
 * and mod.ts reaches nothing but relative modules, so that it can be imported
 * by URL.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ROOT } from "./helpers.ts";

async function deno(args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

function text(output: Deno.CommandOutput): string {
  const decoder = new TextDecoder();
  return decoder.decode(output.stdout) + decoder.decode(output.stderr);
}

Deno.test("deno task check passes: fmt, lint, check and doc --lint mod.ts", async () => {
  const output = await deno(["task", "check"]);
  assert.equal(output.code, 0, text(output));
});

Deno.test("mod.ts imports only relative modules and Deno or Web APIs", async () => {
  const output = await deno(["info", "--json", "mod.ts"]);
  assert.equal(output.code, 0, text(output));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { specifier: string }[];
  };
  const outside = info.modules.map((m) => m.specifier).filter((specifier) =>
    !specifier.startsWith(`file://${ROOT}`)
  );
  assert.deepEqual(outside, []);
  assert.ok(info.modules.length > 1, "mod.ts has modules to check");
});
