import assert from "node:assert/strict";
import { LinkedAbort } from "./linked_abort.ts";

const pure = { permissions: "none" } as const;

Deno.test(
  "LinkedAbort aborts with the first linked signal's reason",
  pure,
  () => {
    const a = new AbortController();
    const b = new AbortController();
    using linked = new LinkedAbort(a.signal, undefined, b.signal);
    assert.equal(linked.signal.aborted, false);
    b.abort("b went");
    assert.equal(linked.signal.aborted, true);
    assert.equal(linked.signal.reason, "b went");
    a.abort("a went");
    assert.equal(linked.signal.reason, "b went");
  },
);

Deno.test(
  "LinkedAbort starts aborted when a signal already is, and stops following once disposed",
  pure,
  () => {
    using early = new LinkedAbort(AbortSignal.abort("gone"));
    assert.equal(early.signal.reason, "gone");
    const a = new AbortController();
    const linked = new LinkedAbort(a.signal);
    linked[Symbol.dispose]();
    a.abort();
    assert.equal(linked.signal.aborted, false);
    linked.abort("own");
    assert.equal(linked.signal.reason, "own");
  },
);
