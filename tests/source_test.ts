/**
 * The repository's own standards, checked by CI: `deno task check` is clean,
 * and both public entries (mod.ts, message/mod.ts) reach nothing but relative
 * modules, so that they can be imported by URL.
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

Deno.test("deno task check passes: fmt, lint, check and doc --lint of both entries", async () => {
  const output = await deno(["task", "check"]);
  assert.equal(output.code, 0, text(output));
});

for (const entry of ["mod.ts", "message/mod.ts"]) {
  Deno.test(`${entry} imports only relative modules and Deno or Web APIs`, async () => {
    const output = await deno(["info", "--json", entry]);
    assert.equal(output.code, 0, text(output));
    const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
      modules: { specifier: string }[];
    };
    const outside = info.modules.map((m) => m.specifier).filter((specifier) =>
      !specifier.startsWith(`file://${ROOT}`)
    );
    assert.deepEqual(outside, []);
    assert.ok(info.modules.length > 1, `${entry} has modules to check`);
  });
}

Deno.test("deno.json exports the lock client and the message layer, each entry its own", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
    exports: Record<string, string>;
  };
  assert.deepEqual(config.exports, {
    ".": "./mod.ts",
    "./message": "./message/mod.ts",
  });
});
