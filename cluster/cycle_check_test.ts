import assert from "node:assert/strict";
import { closedCycle } from "./cycle_check.ts";
import { LockMirror } from "./lock_mirror.ts";
import { type RequestKey, requestKey } from "./request_keys.ts";

const ROOT = "/pklock/v1";

function put(
  mirror: LockMirror,
  revision: number,
  parts: Omit<RequestKey, "seq" | "mode" | "node">,
): string {
  const key = requestKey(ROOT, {
    ...parts,
    mode: "exclusive",
    node: "a",
    seq: mirror.revision + 1,
  });
  const kv = { key, value: "{}", createRevision: revision, lease: "1" };
  mirror.apply(
    [{ type: "put", kv: { ...kv, modRevision: revision } }],
    revision,
  );
  return key;
}

Deno.test(
  "of two requests queued by one txn that close a cycle, only the one whose key sorts last is refused",
  { permissions: "none" },
  () => {
    const mirror = new LockMirror(ROOT);
    put(mirror, 2, { name: "c1", conn: 1 }); // a.1 holds c1
    put(mirror, 3, { name: "c2", conn: 2 }); // a.2 holds c2
    const waitsForC2 = put(mirror, 4, { name: "c2", conn: 1 }); // a.1 waits
    const waitsForC1 = put(mirror, 4, { name: "c1", conn: 2 }); // a.2 waits
    assert.ok(waitsForC2 > waitsForC1, "…/q/c2/… sorts after …/q/c1/…");
    const none = () => false;
    assert.equal(closedCycle(mirror, mirror.get(waitsForC2)!, none), true);
    assert.equal(closedCycle(mirror, mirror.get(waitsForC1)!, none), false);
    assert.equal(
      closedCycle(mirror, mirror.get(waitsForC2)!, (r) => r.key === waitsForC1),
      false,
      "a request known gone closes nothing",
    );
  },
);
