import assert from "node:assert/strict";
import type { KeyValue } from "./etcd_codec.ts";
import { implicitSlots } from "./grant_slots.ts";
import { TOKEN_SLOTS } from "./group_commit.ts";
import { LockMirror } from "./lock_mirror.ts";
import { type RequestKey, requestKey } from "./request_keys.ts";

const pure = { permissions: "none" } as const;
const ROOT = "/pklock/v1";

Deno.test(
  "implicitSlots() gives the free slots in key order, and none past the last",
  pure,
  () => {
    assert.deepEqual(
      implicitSlots(new Set([0, 2]), ["c", "a", "b"]),
      new Map([["a", 1], ["b", 3], ["c", 4]]),
    );
    const keys = Array.from(
      { length: TOKEN_SLOTS + 5 },
      (_, i) => `k${String(i).padStart(3, "0")}`,
    );
    const slots = implicitSlots(new Set([5]), keys);
    assert.equal(slots.size, TOKEN_SLOTS - 1);
    assert.equal(slots.get("k000"), 0);
    assert.equal(slots.get("k005"), 6);
    assert.equal(slots.get(keys[TOKEN_SLOTS - 2]!), TOKEN_SLOTS - 1);
    assert.equal(slots.has(keys[TOKEN_SLOTS - 1]!), false, "no slot left");
  },
);

/** A request's key-value at `revision`. */
function kv(
  revision: number,
  parts: Omit<RequestKey, "seat">,
  value: object = {},
): KeyValue {
  return {
    key: requestKey(ROOT, { ...parts, seat: revision }),
    value: JSON.stringify({ conn: 1, since: 1, ...value }),
    createRevision: revision,
    modRevision: revision,
    lease: "1",
  };
}

const put = (at: KeyValue) => ({ type: "put" as const, kv: at });
const del = (at: KeyValue, revision: number) => ({
  type: "delete" as const,
  kv: { ...at, modRevision: revision },
});

Deno.test(
  "a delete grants what it lets in at its revision, in the slots its revision's granting writes left, in key order",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const x1 = kv(2, { name: "a", mode: "exclusive", node: "a1" }, {
      granted: true,
      slot: 0,
    });
    const s2 = kv(3, { name: "a", mode: "shared", node: "b2" });
    const s3 = kv(4, { name: "a", mode: "shared", node: "a1" });
    const x4 = kv(5, { name: "a", mode: "exclusive", node: "a1" });
    const y5 = kv(6, { name: "b", mode: "exclusive", node: "b2" }, {
      granted: true,
      slot: 0,
    });
    const y6 = kv(7, { name: "b", mode: "exclusive", node: "a1" });
    mirror.apply([x1, s2, s3, x4, y5, y6].map(put), 7);
    assert.deepEqual(mirror.get(x1.key)!.grant, {
      revision: 2,
      slot: 0,
      at: 1,
    });
    assert.equal(mirror.get(s2.key)!.grant, undefined, "it waits");
    // One txn at revision 8: x1 and y5 deleted, a new lock granted at once
    // in slot 1 of it.
    const z = kv(8, { name: "c", mode: "exclusive", node: "b2" }, {
      granted: true,
      slot: 1,
      grantedAt: 9,
    });
    mirror.apply([del(x1, 8), put(z), del(y5, 8)], 8);
    const grant = (at: KeyValue) => {
      const { revision, slot } = mirror.get(at.key)!.grant ?? {};
      return { revision, slot };
    };
    assert.deepEqual(mirror.get(z.key)!.grant, { revision: 8, slot: 1, at: 9 });
    // Keys in order: a's s3 (a1) and s2 (b2), then b's y6.
    assert.ok(s3.key < s2.key && s2.key < y6.key);
    assert.deepEqual(grant(s3), { revision: 8, slot: 0 });
    assert.deepEqual(grant(s2), { revision: 8, slot: 2 });
    assert.deepEqual(grant(y6), { revision: 8, slot: 3 });
    assert.equal(mirror.get(x4.key)!.grant, undefined, "x4 still waits");
    mirror.apply([del(s3, 9)], 9);
    assert.equal(mirror.get(x4.key)!.grant, undefined, "s2 still holds");
    assert.deepEqual(grant(s2), { revision: 8, slot: 2 }, "granted once");
    mirror.apply([del(s2, 10)], 10);
    assert.deepEqual(grant(x4), { revision: 10, slot: 0 });
  },
);

Deno.test(
  "each revision of a batch grants at its own revision; past the last slot a request stays ungranted until its mark",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const holder = kv(2, { name: "r", mode: "exclusive", node: "a1" });
    const many = Array.from(
      { length: TOKEN_SLOTS + 2 },
      (_, i) => kv(3 + i, { name: "r", mode: "shared", node: "b2" }),
    );
    const first = kv(200, { name: "f", mode: "exclusive", node: "a1" });
    const second = kv(201, { name: "f", mode: "exclusive", node: "b2" });
    mirror.apply([holder, ...many, first, second].map(put), 201);
    mirror.apply([del(first, 202), del(holder, 203)], 203);
    assert.deepEqual(mirror.get(second.key)!.grant?.revision, 202);
    const granted = many.filter((at) => mirror.get(at.key)!.grant);
    assert.equal(granted.length, TOKEN_SLOTS);
    assert.ok(
      granted.every((at) => mirror.get(at.key)!.grant!.revision === 203),
    );
    const left = many.find((at) => !mirror.get(at.key)!.grant)!;
    assert.ok(mirror.holds(left.key), "it holds all the same");
    const mark = {
      ...left,
      value: JSON.stringify({ conn: 1, since: 1, granted: true, slot: 4 }),
      modRevision: 204,
    };
    mirror.apply([put(mark)], 204);
    assert.deepEqual(mirror.get(left.key)!.grant, {
      revision: 204,
      slot: 4,
      at: 1,
    });
  },
);

Deno.test(
  "after a listing, a holder with no mark is granted with no known revision",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const marked = kv(2, { name: "m", mode: "exclusive", node: "a1" }, {
      granted: true,
      slot: 3,
    });
    const bare = kv(3, { name: "b", mode: "exclusive", node: "a1" });
    const waits = kv(4, { name: "b", mode: "exclusive", node: "b2" });
    mirror.reset([waits, bare, marked], 10);
    assert.deepEqual(mirror.get(marked.key)!.grant, {
      revision: 2,
      slot: 3,
      at: 1,
    });
    assert.deepEqual(mirror.get(bare.key)!.grant, {
      revision: 0,
      slot: 0,
      at: 1,
    });
    assert.equal(mirror.get(waits.key)!.grant, undefined);
  },
);
