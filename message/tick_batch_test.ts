import assert from "node:assert/strict";
import { TickBatch } from "./tick_batch.ts";

Deno.test({
  name:
    "TickBatch runs the items of one tick once the tick's work is done, in order",
  permissions: "none",
  async fn() {
    const ran: string[] = [];
    const batch = new TickBatch<string>((item) => ran.push(item));
    batch.add("a");
    batch.add("b");
    batch.add("a");
    assert.deepEqual(ran, [], "nothing runs synchronously");
    await Promise.resolve();
    assert.deepEqual(ran, ["a", "b", "a"]);
    batch.add("c");
    await Promise.resolve();
    assert.deepEqual(ran, ["a", "b", "a", "c"], "each item once");
  },
});

Deno.test({
  name: "TickBatch runs an item added while it runs in the same pass",
  permissions: "none",
  async fn() {
    const ran: number[] = [];
    const batch: TickBatch<number> = new TickBatch((item) => {
      ran.push(item);
      if (item < 3) batch.add(item + 1);
    });
    batch.add(1);
    await Promise.resolve();
    assert.deepEqual(ran, [1, 2, 3]);
    await Promise.resolve();
    assert.deepEqual(ran, [1, 2, 3], "and not again");
  },
});
