import assert from "node:assert/strict";
import fc from "fast-check";
import type { KeyValue } from "./etcd_codec.ts";
import { LockMirror } from "./lock_mirror.ts";
import { blockers, closesCycle } from "./mirror_cycles.ts";
import {
  lockPrefix,
  parseRequestKey,
  parseRequestValue,
  type RequestKey,
  requestKey,
} from "./request_keys.ts";

const pure = { permissions: "none" } as const;
const ROOT = "/pklock/v1";

Deno.test(
  "requestKey() and parseRequestKey() round-trip any name, mode, node and seat",
  pure,
  () => {
    fc.assert(fc.property(
      fc.record({
        name: fc.string({ unit: "grapheme", maxLength: 40 }),
        mode: fc.constantFrom("exclusive" as const, "shared" as const),
        node: fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }).map((n) =>
          n.toString(16)
        ),
        seat: fc.nat(),
      }),
      (parts: RequestKey) => {
        const key = requestKey(ROOT, parts);
        assert.deepEqual(parseRequestKey(ROOT, key), { ...parts });
        assert.ok(key.startsWith(lockPrefix(ROOT, parts.name)));
        if (parts.mode === "exclusive") {
          assert.ok(key.startsWith(lockPrefix(ROOT, parts.name, "exclusive")));
        }
      },
    ));
  },
);

Deno.test(
  "one name's prefix never covers another's, even with slashes; a limited request's key is under l/",
  pure,
  () => {
    assert.ok(!lockPrefix(ROOT, "a/b").startsWith(lockPrefix(ROOT, "a")));
    assert.equal(lockPrefix(ROOT, "a/b"), "/pklock/v1/q/a%2Fb/");
    const limited = {
      name: "pool",
      mode: "shared",
      limited: true,
      node: "a1",
      seat: 3,
    } as const;
    const key = requestKey(ROOT, limited);
    assert.equal(key, "/pklock/v1/q/pool/l/a1.3");
    assert.ok(key.startsWith(lockPrefix(ROOT, "pool", "limited")));
    assert.deepEqual(parseRequestKey(ROOT, key), limited);
  },
);

Deno.test(
  "parseRequestKey() and parseRequestValue() refuse what is not ours",
  pure,
  () => {
    for (
      const key of [
        "/other/q/a/x/1.2",
        `${ROOT}/q/a/y/1.2`,
        `${ROOT}/q/a/x/zz.2`,
        `${ROOT}/q/a/x/1`,
        `${ROOT}/q/a/x/1.2.3`,
        `${ROOT}/q/%E0/x/1.2`,
        `${ROOT}/q/a/b/x/1.2`,
      ]
    ) assert.equal(parseRequestKey(ROOT, key), null, key);
    assert.deepEqual(parseRequestValue("not json"), { since: 0 });
    assert.deepEqual(parseRequestValue('{"since":5,"granted":true}'), {
      since: 5,
      granted: true,
    });
  },
);

type Step =
  | { kind: "put"; name: string; exclusive: boolean; limit?: number }
  | { kind: "delete"; pick: number }
  | { kind: "mark"; pick: number }
  | { kind: "relist" };

const stepArbitrary: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant("put" as const),
    name: fc.constantFrom("a", "b", "c/d"),
    exclusive: fc.boolean(),
    limit: fc.constantFrom(1, 2, 3),
  }, { requiredKeys: ["kind", "name", "exclusive"] }),
  fc.record({ kind: fc.constant("delete" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("mark" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("relist" as const) }),
);

/** The rule stated plainly, over the live keys in create order. */
function referenceHolds(live: KeyValue[], key: string): boolean {
  const mine = parseRequestKey(ROOT, key)!;
  const queue = live.filter((kv) =>
    parseRequestKey(ROOT, kv.key)!.name === mine.name
  )
    .sort((a, b) => a.createRevision - b.createRevision);
  const at = queue.findIndex((kv) => kv.key === key);
  const before = queue.slice(0, at);
  if (mine.mode === "exclusive") return at === 0;
  const limitOf = (kv: KeyValue) =>
    parseRequestKey(ROOT, kv.key)!.limited
      ? parseRequestValue(kv.value).limit!
      : Infinity;
  const limit = limitOf(queue[at]!);
  return before.every((kv) =>
    parseRequestKey(ROOT, kv.key)!.mode === "shared" && limitOf(kv) === limit
  ) && at < limit;
}

Deno.test(
  "LockMirror agrees with the grant rule, a holder holds until deleted, whatever the limits, and is granted at the revision it came to hold",
  pure,
  () => {
    fc.assert(
      fc.property(fc.array(stepArbitrary, { maxLength: 60 }), (steps) => {
        const mirror = new LockMirror(ROOT);
        const live: KeyValue[] = [];
        const holding = new Set<string>();
        let revision = 1;
        for (const step of steps) {
          revision++;
          if (step.kind === "put") {
            const key = requestKey(ROOT, {
              name: step.name,
              mode: step.exclusive ? "exclusive" : "shared",
              limited: !step.exclusive && step.limit ? true : undefined,
              node: "a1",
              seat: revision,
            });
            const kv = {
              key,
              value: JSON.stringify({ conn: 1, since: 1, limit: step.limit }),
              createRevision: revision,
              modRevision: revision,
              lease: "1",
            };
            live.push(kv);
            mirror.apply([{ type: "put", kv }], revision);
          } else if (step.kind === "relist") {
            mirror.reset([...live].reverse(), revision);
          } else if (live.length === 0) {
            mirror.apply([], revision); // a progress notification
          } else {
            const at = step.pick % live.length;
            const kv = live[at]!;
            if (step.kind === "delete") {
              live.splice(at, 1);
              holding.delete(kv.key);
              const deleted: unknown[] = [];
              const touched = mirror.apply(
                [{ type: "delete", kv: { ...kv, modRevision: revision } }],
                revision,
                deleted as never,
              );
              assert.equal(deleted.length, 1);
              assert.ok(touched.has(parseRequestKey(ROOT, kv.key)!.name));
            } else {
              kv.value = JSON.stringify({
                ...parseRequestValue(kv.value),
                granted: true,
              });
              kv.modRevision = revision;
              mirror.apply([{ type: "put", kv }], revision);
              assert.equal(mirror.get(kv.key)!.modRevision, revision);
              assert.equal(
                mirror.get(kv.key)!.createRevision,
                kv.createRevision,
              );
            }
          }
          assert.equal(mirror.revision, revision);
          for (const kv of live) {
            const holds = mirror.holds(kv.key);
            assert.equal(holds, referenceHolds(live, kv.key), kv.key);
            const request = mirror.get(kv.key)!;
            assert.equal(
              mirror.holders(request.name).includes(request),
              holds,
              `${kv.key} in holders()`,
            );
            if (holding.has(kv.key)) {
              assert.ok(holds, `${kv.key} stopped holding`);
            } else if (holds && !request.value.granted) {
              assert.equal(request.grant?.revision, revision, kv.key);
            }
            if (holds) {
              assert.ok(request.grant, `${kv.key} holds ungranted`);
              holding.add(kv.key);
            }
          }
          for (const name of mirror.names()) {
            const revisions = mirror.queue(name).map((r) => r.createRevision);
            assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b));
          }
        }
      }),
    );
  },
);

Deno.test(
  "LockMirror ignores keys that are not requests and deletes of unknown keys",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const stray = {
      key: `${ROOT}/q/a/x/oops`,
      value: "",
      createRevision: 2,
      modRevision: 2,
      lease: "0",
    };
    assert.equal(mirror.apply([{ type: "put", kv: stray }], 2).size, 0);
    const gone = { ...stray, modRevision: 3 };
    assert.equal(mirror.apply([{ type: "delete", kv: gone }], 3).size, 0);
    assert.deepEqual([...mirror.names()], []);
    assert.equal(mirror.holds(stray.key), false);
  },
);

function put(
  mirror: LockMirror,
  revision: number,
  parts: Omit<RequestKey, "seat"> & { conn: number },
): string {
  const { conn, ...at } = parts;
  const key = requestKey(ROOT, { ...at, seat: revision });
  const kv = {
    key,
    value: JSON.stringify({ conn, since: 1 }),
    createRevision: revision,
    modRevision: revision,
    lease: "1",
  };
  mirror.apply([{ type: "put", kv }], revision);
  return key;
}

Deno.test(
  "closesCycle() finds a wait that closes a cycle across nodes, counting only older requests",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const x = { mode: "exclusive", conn: 1 } as const;
    put(mirror, 2, { ...x, name: "a", node: "a1" }); // a1.1 holds a
    put(mirror, 3, { ...x, name: "b", node: "b2" }); // b2.1 holds b
    put(mirror, 4, { ...x, name: "b", node: "a1" }); // a1.1 waits for b2.1
    const waitsFor: string[] = [];
    blockers(mirror, "a", "exclusive", undefined, waitsFor);
    assert.deepEqual(waitsFor, ["a1.1"]);
    assert.equal(
      closesCycle(mirror, "b2.1", waitsFor),
      true,
      "b2.1 asking for a would close it",
    );
    assert.equal(closesCycle(mirror, "c3.1", waitsFor), false);
    const closing = put(mirror, 5, { ...x, name: "a", node: "b2" }); // b2.1 waits for a: cycle
    const mine: string[] = [];
    blockers(mirror, "a", "exclusive", mirror.get(closing), mine);
    assert.equal(
      closesCycle(mirror, "b2.1", mine, 5),
      true,
      "the youngest closed it",
    );
    const older: string[] = [];
    blockers(
      mirror,
      "b",
      "exclusive",
      mirror.get(
        requestKey(ROOT, { mode: "exclusive", name: "b", node: "a1", seat: 4 }),
      ),
      older,
    );
    assert.equal(
      closesCycle(mirror, "a1.1", older, 4),
      false,
      "the older one did not",
    );
  },
);

Deno.test(
  "blockers() of a shared request are the exclusive ones before it",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    put(mirror, 2, { name: "r", mode: "shared", node: "a", conn: 1 });
    put(mirror, 3, { name: "r", mode: "exclusive", node: "a", conn: 2 });
    put(mirror, 4, { name: "r", mode: "shared", node: "b", conn: 1 });
    const shared: string[] = [];
    blockers(mirror, "r", "shared", undefined, shared);
    assert.deepEqual(shared, ["a.2"]);
    const exclusive: string[] = [];
    blockers(mirror, "r", "exclusive", undefined, exclusive);
    assert.deepEqual(exclusive, ["a.1", "a.2", "b.1"]);
  },
);

Deno.test(
  "a shared request younger than one with another limit holds nothing, nor do those behind it, until it goes; the oldest sets the limit",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    const at = (revision: number, node: string, limit?: number) => {
      const key = requestKey(ROOT, {
        name: "pool",
        mode: "shared",
        limited: true,
        node,
        seat: revision,
      });
      const kv = {
        key,
        value: JSON.stringify({ conn: 1, since: 1, limit }),
        createRevision: revision,
        modRevision: revision,
        lease: "1",
      };
      mirror.apply([{ type: "put", kv }], revision);
      return kv;
    };
    const first = at(2, "a", 2);
    const raced = at(3, "b", 3);
    const behind = at(4, "c", 2);
    assert.equal(mirror.limit("pool"), 2);
    assert.deepEqual(
      [first, raced, behind].map((kv) => mirror.holds(kv.key)),
      [true, false, false],
    );
    assert.equal(mirror.limit("pool", (r) => r.key === first.key), 3);
    assert.equal(mirror.limit("other"), undefined);
    mirror.apply([{ type: "delete", kv: { ...raced, modRevision: 5 } }], 5);
    assert.equal(mirror.holds(behind.key), true);
    mirror.apply([{ type: "delete", kv: { ...first, modRevision: 6 } }], 6);
    assert.equal(mirror.limit("pool"), 2);
  },
);

Deno.test(
  "blockers() of a shared request with a limit are every request before it",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    put(mirror, 2, { name: "r", mode: "shared", node: "a", conn: 1 });
    put(mirror, 3, { name: "r", mode: "shared", node: "b", conn: 1 });
    const one: string[] = [];
    blockers(mirror, "r", "shared", undefined, one, undefined, 1);
    assert.deepEqual(one, ["a.1", "b.1"]);
    const two: string[] = [];
    blockers(mirror, "r", "shared", undefined, two, undefined, 2);
    assert.deepEqual(two, ["a.1", "b.1"]);
    const unbounded: string[] = [];
    blockers(mirror, "r", "shared", undefined, unbounded);
    assert.deepEqual(unbounded, []);
  },
);
