import assert from "node:assert/strict";
import fc from "fast-check";
import type { KeyValue } from "./etcd_codec.ts";
import { implicitSlots } from "./grant_slots.ts";
import { TOKEN_SLOTS } from "./group_commit.ts";
import { LockMirror, RevisionSplitError } from "./lock_mirror.ts";
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

Deno.test(
  "a batch that goes on with a revision the mirror has applied is refused: its grants there could differ",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const first = kv(5, { name: "a", mode: "exclusive", node: "a1" });
    const second = kv(5, { name: "a", mode: "exclusive", node: "b2" });
    mirror.apply([put(first)], 5);
    assert.throws(
      () => mirror.apply([put(second)], 5),
      RevisionSplitError,
    );
    assert.equal(mirror.get(second.key), undefined, "nothing applied");
  },
);

/** One op of a generated txn. */
const opArbitrary = fc.record({
  kind: fc.constantFrom("acquire", "acquire", "delete", "mark", "record"),
  pick: fc.nat(),
  name: fc.constantFrom("p", "q", "r"),
  node: fc.constantFrom("a1", "b2", "c3"),
  exclusive: fc.boolean(),
  limit: fc.constantFrom(undefined, 1, 2),
});

type Event = { type: "put" | "delete"; kv: KeyValue };

/**
 * A history of txns as etcd would commit them: acquires granted at once
 * when their lock has no key, deletes, marks of holders left without a slot,
 * records of grants that deletes made;
 * with `many`, 140 locks held and waited for, then all their holders deleted
 * by one revision (a lease's expiry), past a revision's slots.
 */
function history(
  steps: (typeof opArbitrary extends fc.Arbitrary<infer T> ? T : never)[][],
  many: boolean,
): { revision: number; events: Event[] }[] {
  const mirror = new LockMirror(ROOT);
  const store = new Map<string, KeyValue>();
  const txns: { revision: number; events: Event[] }[] = [];
  let revision = 1;
  let seat = 0;
  const commit = (events: Event[]) => {
    if (events.length === 0) return;
    revision++;
    for (const event of events) {
      event.kv.modRevision = revision;
      if (event.type === "put") {
        if (!store.has(event.kv.key)) event.kv.createRevision = revision;
        store.set(event.kv.key, event.kv);
      } else store.delete(event.kv.key);
    }
    mirror.apply(events, revision);
    txns.push({ revision, events });
  };
  const acquire = (parts: Omit<RequestKey, "seat">, slot: number): Event => {
    const free = mirror.queue(parts.name).length === 0 && !parts.limited;
    const value = free ? { granted: true, slot } : {};
    return { type: "put", kv: kv(++seat, parts, value) };
  };
  if (many) {
    // Holders first, then a waiter for each, at most 100 ops a txn.
    for (const chunk of [0, 100, 0, 100]) {
      const count = chunk === 0 ? 100 : 40;
      commit(
        Array.from(
          { length: count },
          (_, i) =>
            acquire(
              { name: `m${chunk + i}`, mode: "exclusive", node: "a1" },
              i,
            ),
        ),
      );
    }
  }
  for (const [at, ops] of steps.entries()) {
    const events: Event[] = [];
    const touched = new Set<string>();
    const queued = new Set<string>();
    for (const op of ops) {
      const keys = [...store.keys()].filter((key) => !touched.has(key));
      if (op.kind === "acquire" && !queued.has(op.name)) {
        queued.add(op.name);
        const limited = !op.exclusive && op.limit !== undefined;
        const event = acquire({
          name: op.name,
          mode: op.exclusive ? "exclusive" : "shared",
          node: op.node,
          ...(limited ? { limited: true } : {}),
        }, events.length);
        if (limited) {
          event.kv.value = JSON.stringify({
            conn: 1,
            since: 1,
            limit: op.limit,
          });
        }
        touched.add(event.kv.key);
        events.push(event);
      } else if (op.kind === "delete" && keys.length > 0) {
        const key = keys[op.pick % keys.length]!;
        touched.add(key);
        events.push({ type: "delete", kv: { ...store.get(key)! } });
      } else if (op.kind === "mark") {
        const unmarked = [...mirror.names()].flatMap((name) =>
          mirror.holders(name)
        ).filter((h) => h.grant === undefined && !touched.has(h.key));
        if (unmarked.length === 0) continue;
        const { key } = unmarked[op.pick % unmarked.length]!;
        touched.add(key);
        const kept = JSON.parse(store.get(key)!.value);
        const value = { ...kept, granted: true, slot: events.length };
        events.push({
          type: "put",
          kv: { ...store.get(key)!, value: JSON.stringify(value) },
        });
      } else if (op.kind === "record") {
        const made = [...mirror.names()].flatMap((name) => mirror.holders(name))
          .filter((h) =>
            h.grant !== undefined && !h.value.granted && !touched.has(h.key)
          );
        if (made.length === 0) continue;
        const { key, grant } = made[op.pick % made.length]!;
        touched.add(key);
        const value = {
          ...JSON.parse(store.get(key)!.value),
          granted: true,
          slot: grant!.slot,
          grantRevision: grant!.revision,
        };
        events.push({
          type: "put",
          kv: { ...store.get(key)!, value: JSON.stringify(value) },
        });
      }
    }
    commit(events);
    if (many && at === 0) {
      commit(
        [...mirror.names()].filter((name) => name.startsWith("m"))
          .map((name) => mirror.holders(name)[0]!)
          .map((holder) => ({
            type: "delete" as const,
            kv: { ...store.get(holder.key)! },
          })),
      );
    }
  }
  return txns;
}

Deno.test(
  "every mirror finds the same grants, in unique slots, however the watch batches revisions and wherever it listed",
  pure,
  () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(opArbitrary, { minLength: 1, maxLength: 6 }), {
          maxLength: 30,
        }),
        fc.boolean(),
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 40 }),
        fc.nat(),
        (steps, many, cuts, listing) => {
          const txns = history(steps, many);
          const one = new LockMirror(ROOT);
          const batched = new LockMirror(ROOT);
          const listed = new LockMirror(ROOT);
          const made = new Map<string, string>();
          const firstGrant = new Map<string, string>();
          const tokenOf = (
            grant: { revision: number; slot: number } | undefined,
          ) => grant && `${grant.revision}.${grant.slot}`;
          const store = new Map<string, KeyValue>();
          const listAt = txns.length === 0 ? -1 : listing % txns.length;
          for (const [i, { revision, events }] of txns.entries()) {
            one.apply(events, revision);
            for (const event of events) {
              if (event.type === "put") store.set(event.kv.key, event.kv);
              else store.delete(event.kv.key);
            }
            for (const name of one.names()) {
              for (const { key, grant } of one.holders(name)) {
                const first = firstGrant.get(key);
                if (first !== undefined) {
                  assert.equal(tokenOf(grant), first, `${key} granted once`);
                } else if (grant) firstGrant.set(key, tokenOf(grant)!);
                if (grant?.revision !== revision) continue;
                const id = `${grant.revision}.${grant.slot}`;
                const known = made.get(id);
                assert.ok(known === undefined || known === key, `slot ${id}`);
                assert.ok(grant.slot >= 0 && grant.slot < TOKEN_SLOTS);
                made.set(id, key);
              }
            }
            if (i === listAt) listed.reset([...store.values()], revision);
          }
          let at = 0;
          for (const cut of cuts) {
            const chunk = txns.slice(at, at += cut);
            if (chunk.length === 0) break;
            const last = chunk.at(-1)!.revision;
            batched.apply(chunk.flatMap((txn) => txn.events), last);
            const later = chunk.filter((txn) => txn.revision > listed.revision);
            listed.apply(later.flatMap((txn) => txn.events), last);
          }
          if (at < txns.length) {
            const rest = txns.slice(at);
            batched.apply(rest.flatMap((t) => t.events), rest.at(-1)!.revision);
            const later = rest.filter((txn) => txn.revision > listed.revision);
            listed.apply(later.flatMap((t) => t.events), rest.at(-1)!.revision);
          }
          const since = listAt < 0 ? 0 : txns[listAt]!.revision;
          for (const key of store.keys()) {
            const grant = one.get(key)!.grant;
            assert.equal(tokenOf(batched.get(key)!.grant), tokenOf(grant), key);
            const seen = listed.get(key)!.grant;
            if (seen?.revision === 0) {
              assert.ok(grant === undefined || grant.revision <= since, key);
            } else assert.equal(tokenOf(seen), tokenOf(grant), key);
          }
        },
      ),
    );
  },
);
