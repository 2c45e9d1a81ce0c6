import assert from "node:assert/strict";
import { delay } from "../message/io.ts";
import { LockTimeoutError } from "./errors.ts";
import { Turns } from "./turns.ts";

Deno.test({
  name: "turns for one name come in call order, each after the one before ends",
  permissions: "none",
  async fn() {
    const turns = new Turns();
    const order: number[] = [];
    const first = await turns.take("x");
    const later = [1, 2].map((i) =>
      turns.take("x").then((end) => {
        order.push(i);
        return end;
      })
    );
    const other = await turns.take("y"); // another name does not wait
    other();
    await Promise.resolve();
    assert.deepEqual(order, []);
    first();
    const second = await later[0]!;
    assert.deepEqual(order, [1]);
    second();
    (await later[1]!)();
    assert.deepEqual(order, [1, 2]);
  },
});

Deno.test({
  name: "a turn given up keeps the turns behind it waiting for the ones before",
  permissions: "none",
  async fn() {
    const turns = new Turns();
    const first = await turns.take("x");
    await assert.rejects(turns.take("x", 0), LockTimeoutError);
    const reason = new Error("stop");
    const controller = new AbortController();
    const aborted = turns.take("x", undefined, controller.signal);
    let reached = false;
    const last = turns.take("x").then((end) => {
      reached = true;
      return end;
    });
    controller.abort(reason);
    await assert.rejects(aborted, (error) => error === reason);
    await delay(0); // a macrotask: every settled promise has run
    assert.equal(reached, false, "the last turn came while the first ran");
    first();
    (await last)();
    assert.equal(reached, true);
    // Every turn ended: a new one comes at once, even with wait 0.
    (await turns.take("x", 0))();
  },
});
