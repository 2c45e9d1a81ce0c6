// A short torture run (torture/main.ts) inside the suite: real worker
// processes fight over one lock while holders and waiters are killed with
// kill -9 and the server is killed and restarted on its state file; the
// checker must find no overlapping holds, no out-of-order token and no ask
// left without an outcome. `deno task torture` is the long run.
import assert from "node:assert/strict";
import { deadline, DenoProcess } from "./helpers.ts";

const DRIVER = new URL("../torture/main.ts", import.meta.url).pathname;

Deno.test("a short torture run under kill -9 and a server restart finds no violation", async () => {
  await using driver = new DenoProcess(DRIVER, [
    "--workers",
    "4",
    "--seconds",
    "4",
    "--rounds",
    "0",
    "--server-restarts",
    "1",
    "--kill-every",
    "150",
  ]);
  let result;
  try {
    result = await deadline(driver.result(), 18_000, "the torture run");
  } catch (error) {
    // SIGTERM lets the driver kill its workers and server before it exits.
    driver.kill("SIGTERM");
    await deadline(driver.result(), 5_000, "the driver to clean up")
      .catch(() => {});
    throw error;
  }
  const { code, stdout, stderr } = result;
  const summary = stdout.match(/^torture: .*$/m)?.[0];
  assert.ok(summary, `no summary line\nstdout: ${stdout}\nstderr: ${stderr}`);
  const count = (name: string) =>
    Number(summary.match(new RegExp(`\\b${name}=(\\d+)`))?.[1]);
  console.log(summary);
  assert.equal(code, 0, `${summary}\n${stderr}`);
  assert.equal(count("violations"), 0, stderr);
  assert.equal(count("errors"), 0, stderr);
  assert.equal(count("server_restarts"), 1, summary);
  assert.ok(count("grants") > 0, summary);
  assert.ok(count("kills") > 0, summary);
  // Tokens of the restarted server are above its first reservation.
  assert.ok(count("max_token") > 10_000, summary);
});
