import assert from "node:assert/strict";
import { AbandonedKeys } from "./abandoned_keys.ts";
import { LockMirror } from "./lock_mirror.ts";
import { requestKey } from "./request_keys.ts";

const ROOT = "/pklock/v1";

function keyOf(seq: number): string {
  return requestKey(ROOT, {
    name: "n",
    mode: "exclusive",
    node: "a",
    seat: seq,
  });
}

Deno.test(
  "an abandoned key is deleted at once and once more when the mirror shows it; at most 4,096 are kept",
  { permissions: "none" },
  () => {
    const deletes: string[] = [];
    const abandoned = new AbandonedKeys((keys) => deletes.push(...keys));
    const mirror = new LockMirror(ROOT);
    for (let seq = 1; seq <= 4097; seq++) abandoned.add(keyOf(seq));
    assert.equal(deletes.length, 4097);
    deletes.length = 0;
    abandoned.sweep(mirror);
    assert.deepEqual(deletes, [], "nothing shows yet");
    const kvs = [1, 2, 4097].map((seq, i) => ({
      key: keyOf(seq),
      value: "{}",
      createRevision: 10 + i,
      modRevision: 10 + i,
      lease: "1",
    }));
    mirror.apply(kvs.map((kv) => ({ type: "put" as const, kv })), 12);
    abandoned.sweep(mirror);
    assert.deepEqual(
      deletes,
      [keyOf(2), keyOf(4097)],
      "the first was forgotten",
    );
    deletes.length = 0;
    abandoned.sweep(mirror);
    assert.deepEqual(deletes, [], "each is deleted again once");
    abandoned.add(keyOf(5000));
    abandoned.clear();
    deletes.length = 0;
    abandoned.sweep(mirror);
    assert.deepEqual(deletes, []);
  },
);
