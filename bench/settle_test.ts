import assert from "node:assert/strict";
import { settle } from "./settle.ts";

Deno.test({
  name: "settle waits for loops that end, and fails on ones that never do",
  permissions: "none",
  async fn() {
    let finish = () => {};
    const ending = new Promise<void>((resolve) => finish = resolve);
    const waited = settle([Promise.resolve(), ending], 60_000);
    finish();
    await waited;

    const never = new Promise<void>(() => {});
    await assert.rejects(
      settle([Promise.resolve(), never, never], 50),
      /^Error: 2 of 3 clients were still in a request 0\.05 s after the window ended/,
    );
  },
});
