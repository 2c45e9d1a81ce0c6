import assert from "node:assert/strict";
import { delay, writeAll, writeAllSync } from "./io.ts";

Deno.test({
  name: "writeAll writes every byte through short writes",
  permissions: "none",
  async fn() {
    const seen: number[] = [];
    const writer = {
      write(bytes: Uint8Array) {
        seen.push(bytes[0]!);
        return Promise.resolve(1);
      },
    };
    await writeAll(writer, new Uint8Array([1, 2, 3]));
    assert.deepEqual(seen, [1, 2, 3]);
  },
});

Deno.test({
  name: "writeAllSync writes every byte through short writes",
  permissions: "none",
  fn() {
    const seen: number[] = [];
    writeAllSync({
      writeSync(bytes: Uint8Array) {
        seen.push(...bytes.subarray(0, 2));
        return Math.min(2, bytes.length);
      },
    }, new Uint8Array([1, 2, 3, 4, 5]));
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  },
});

Deno.test({
  name: "delay resolves true when aborted and false when the time runs out",
  permissions: "none",
  async fn() {
    const controller = new AbortController();
    const waiting = delay(60_000, controller.signal);
    controller.abort();
    assert.equal(await waiting, true);
    assert.equal(await delay(1), false);
    assert.equal(await delay(60_000, AbortSignal.abort()), true);
  },
});
