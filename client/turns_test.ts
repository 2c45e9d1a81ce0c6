import assert from "node:assert/strict";
import fc from "fast-check";
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

Deno.test({
  name: "turns: one at a time, in call order, whatever is given up (property)",
  permissions: "none",
  async fn() {
    type Step = { take: true } | { end: true } | { abort: number };
    const step = fc.oneof(
      fc.constant<Step>({ take: true }),
      fc.constant<Step>({ end: true }),
      fc.nat(9).map((abort): Step => ({ abort })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 30 }), async (steps) => {
        const turns = new Turns();
        const taken: Array<{
          controller: AbortController;
          state: "waiting" | "reached" | "ended" | "aborted";
          end?: () => void;
        }> = [];
        for (const next of steps) {
          if ("take" in next) {
            const controller = new AbortController();
            const turn = {
              controller,
              state: "waiting" as const,
            } as (typeof taken)[number];
            taken.push(turn);
            turns.take("x", undefined, controller.signal).then(
              (end) => {
                turn.state = "reached";
                turn.end = end;
              },
              () => (turn.state = "aborted"),
            );
          } else if ("end" in next) {
            const active = taken.find((turn) => turn.state === "reached");
            if (active) active.state = "ended", active.end!();
          } else {
            const turn = taken[next.abort];
            if (turn?.state === "waiting") turn.controller.abort();
          }
          await delay(0);
          const reached = taken.filter((turn) => turn.state === "reached");
          assert.ok(reached.length <= 1, "two turns at once");
          const first = taken.findIndex((turn) =>
            turn.state === "waiting" || turn.state === "reached"
          );
          // The first turn still in line is the one that has it.
          if (first !== -1) assert.equal(taken[first]!.state, "reached");
        }
        for (const turn of taken) {
          if (turn.state === "waiting") turn.controller.abort();
          if (turn.state === "reached") turn.end!();
        }
        await delay(0);
      }),
      { numRuns: 200 },
    );
  },
});
