import assert from "node:assert/strict";
import { LockLostError } from "./errors.ts";
import { Farewell } from "./farewell.ts";

Deno.test({
  name: "the first farewell the server sends explains every loss after it",
  permissions: "none",
  fn() {
    const farewell = new Farewell();
    assert.equal(
      farewell.heard({ event: "forced_release", lockName: "a" }),
      true,
    );
    assert.equal(farewell.heard({ event: "shutdown" }), true);
    const error = farewell.lost("b", { reason: "peer_closed" }, "cause");
    assert.ok(error instanceof LockLostError);
    assert.equal(error.reason, "forced_release");
    assert.equal(
      error.message,
      'Lost lock "b": an operator forced the release of lock "a"',
    );
    assert.equal(error.cause, "cause");
    assert.equal(
      farewell.lost("a", { reason: "peer_closed" }).message,
      'Lost lock "a": an operator forced its release',
    );
  },
});

Deno.test({
  name:
    "error codes that close the connection explain it as refused; others do not",
  permissions: "none",
  fn() {
    const farewell = new Farewell();
    farewell.refused("deadlock");
    assert.equal(
      farewell.lost("x", { reason: "peer_closed" }).reason,
      "peer_closed",
    );
    farewell.refused("auth_failed");
    assert.equal(
      farewell.lost("x", { reason: "peer_closed" }).reason,
      "refused",
    );
    const framing = new Farewell();
    assert.equal(framing.heard({ error: { code: "frame_too_large" } }), true);
    assert.equal(
      framing.lost("x", { reason: "peer_closed" }).reason,
      "protocol_error",
    );
  },
});

Deno.test({
  name: "without a farewell, the loss says how the connection closed",
  permissions: "none",
  fn() {
    const farewell = new Farewell();
    assert.equal(farewell.heard({ event: undefined }), false);
    const cases = [
      ["peer_closed", "peer_closed", "the server closed the connection"],
      ["closed", "closed", "the client was closed"],
      ["io_error", "io_error", "the connection failed"],
      [
        "protocol_error",
        "protocol_error",
        "the server sent a frame this client cannot read",
      ],
    ] as const;
    for (const [close, reason, why] of cases) {
      const error = farewell.lost("x", { reason: close });
      assert.equal(error.reason, reason);
      assert.equal(error.message, `Lost lock "x": ${why}`);
    }
  },
});
