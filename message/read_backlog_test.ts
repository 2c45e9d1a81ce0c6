import assert from "node:assert/strict";
import { ReadBacklog } from "./read_backlog.ts";

Deno.test({
  name: "ReadBacklog keeps copies of the frames held, and gives them in order",
  permissions: "none",
  fn() {
    const backlog = new ReadBacklog();
    const buffer = Uint8Array.of(1, 2);
    backlog.hold(buffer);
    buffer[0] = 9;
    backlog.hold(Uint8Array.of(3));
    assert.deepEqual(backlog.next(), Uint8Array.of(1, 2), "a copy");
    assert.deepEqual(backlog.next(), Uint8Array.of(3));
    assert.equal(backlog.next(), undefined);
  },
});

Deno.test({
  name: "ReadBacklog pauses until resumed, and may pause again",
  permissions: "none",
  async fn() {
    const backlog = new ReadBacklog();
    assert.equal(backlog.paused, false);
    const none = backlog.resumed;
    assert.equal(none, undefined, "nothing to wait for");
    backlog.pause();
    const first = backlog.resumed;
    backlog.pause();
    assert.equal(backlog.resumed, first, "one wait for one pause");
    let resumed = false;
    first!.then(() => resumed = true);
    await Promise.resolve();
    assert.equal(resumed, false);
    backlog.resume();
    await first;
    assert.equal(backlog.paused, false);
    backlog.pause();
    assert.equal(backlog.paused, true);
    assert.notEqual(backlog.resumed, first);
    backlog.resume();
    backlog.resume();
    assert.equal(backlog.paused, false);
  },
});
