import assert from "node:assert/strict";
import fc from "fast-check";
import { RequestSeats } from "./request_seats.ts";

const pure = { permissions: "none" } as const;
const ROOT = "/pklock/v1";
const X = { name: "job", mode: "exclusive" } as const;

Deno.test(
  "a request's key is taken again once its delete is taken and the mirror is past it",
  pure,
  () => {
    const seats = new RequestSeats(ROOT, "a1");
    const first = seats.take(X, 5);
    assert.equal(first, "/pklock/v1/q/job/x/a1.0");
    assert.equal(seats.take(X, 5), "/pklock/v1/q/job/x/a1.1", "in use: new");
    seats.leaving([first]);
    assert.equal(seats.take(X, 5), "/pklock/v1/q/job/x/a1.2", "being deleted");
    seats.left(first, 10);
    assert.equal(seats.take(X, 9), "/pklock/v1/q/job/x/a1.3", "mirror behind");
    assert.equal(seats.take(X, 10), first);
    assert.equal(seats.take(X, 10), "/pklock/v1/q/job/x/a1.4");
  },
);

Deno.test(
  "a key is never taken again after a delete not taken at its first try, nor after an acquire of unknown outcome",
  pure,
  () => {
    const seats = new RequestSeats(ROOT, "a1");
    const retried = seats.take(X, 1);
    seats.leaving([retried]);
    seats.left(retried, undefined);
    const abandoned = seats.take(X, 1);
    seats.leaving([abandoned]);
    seats.retire(abandoned);
    seats.left(abandoned, 3);
    const twice = seats.take(X, 1);
    seats.leaving([twice]);
    seats.leaving([twice]);
    seats.left(twice, 4);
    const next = seats.take(X, 100);
    assert.ok(![retried, abandoned, twice].includes(next), "one still going");
    seats.left(twice, undefined);
    for (let i = 0; i < 5; i++) {
      assert.ok(![retried, abandoned, twice].includes(seats.take(X, 100)));
    }
  },
);

Deno.test(
  "a vacated key deleted again is not taken until that delete is taken too; an acquire that wrote nothing vacates its key",
  pure,
  () => {
    const seats = new RequestSeats(ROOT, "a1");
    const key = seats.take(X, 1);
    seats.unused(key, 2);
    seats.leaving([key]);
    assert.notEqual(seats.take(X, 10), key);
    seats.left(key, 7);
    assert.equal(seats.take(X, 7), key);
  },
);

Deno.test(
  "keys are kept apart by lock and kind, and the vacated ones kept are bounded",
  pure,
  () => {
    const seats = new RequestSeats(ROOT, "b2");
    const shared = { name: "job", mode: "shared" } as const;
    const limited = { ...shared, limited: true } as const;
    const keys = [X, shared, limited, { ...X, name: "other" }].map((r) =>
      seats.take(r, 1)
    );
    assert.deepEqual(keys, [
      "/pklock/v1/q/job/x/b2.0",
      "/pklock/v1/q/job/s/b2.1",
      "/pklock/v1/q/job/l/b2.2",
      "/pklock/v1/q/other/x/b2.3",
    ]);
    for (const key of keys) {
      seats.leaving([key]);
      seats.left(key, 2);
    }
    assert.equal(seats.take(shared, 2), keys[1]);
    assert.equal(seats.take(limited, 2), keys[2]);
    assert.equal(seats.take(X, 2), keys[0]);

    const many = Array.from({ length: 70 }, () => seats.take(X, 2));
    for (const key of many) {
      seats.leaving([key]);
      seats.left(key, 3);
    }
    const again = new Set(many.map(() => seats.take(X, 3)));
    assert.equal([...again].filter((k) => many.includes(k)).length, 64);

    const locks = Array.from(
      { length: 4097 },
      (_, i) => seats.take({ ...X, name: `n${i}` }, 3),
    );
    for (const key of locks) {
      seats.leaving([key]);
      seats.left(key, 4);
    }
    assert.notEqual(seats.take({ ...X, name: "n0" }, 4), locks[0], "forgotten");
    assert.equal(seats.take({ ...X, name: "n1" }, 4), locks[1]);
  },
);

Deno.test(
  "no key is taken while its request lives or a delete of it is unanswered, and none after a doubtful delete",
  pure,
  () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant("take" as const), name: fc.nat(2) }),
      fc.record({ kind: fc.constant("leave" as const), pick: fc.nat() }),
      fc.record({
        kind: fc.constant("answer" as const),
        pick: fc.nat(),
        clean: fc.boolean(),
      }),
      fc.record({ kind: fc.constant("retire" as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant("watch" as const) }),
    );
    fc.assert(fc.property(fc.array(step, { maxLength: 120 }), (steps) => {
      const seats = new RequestSeats(ROOT, "c3");
      let revision = 1;
      let seen = 1;
      const live = new Set<string>();
      const deleting: string[] = [];
      const doubtful = new Set<string>();
      const deletedAt = new Map<string, number>();
      for (const s of steps) {
        if (s.kind === "take") {
          const key = seats.take({ ...X, name: `n${s.name}` }, seen);
          assert.ok(!live.has(key), "in use");
          assert.ok(!deleting.includes(key), "a delete unanswered");
          assert.ok(!doubtful.has(key), "a doubtful delete");
          assert.ok((deletedAt.get(key) ?? 0) <= seen, "mirror behind");
          live.add(key);
        } else if (s.kind === "leave" && live.size > 0) {
          const key = [...live][s.pick % live.size]!;
          live.delete(key);
          seats.leaving([key]);
          deleting.push(key);
          if (s.pick % 3 === 0) {
            seats.leaving([key]);
            deleting.push(key);
          }
        } else if (s.kind === "answer" && deleting.length > 0) {
          const [key] = deleting.splice(s.pick % deleting.length, 1);
          revision++;
          if (s.clean) deletedAt.set(key!, revision);
          else doubtful.add(key!);
          seats.left(key!, s.clean ? revision : undefined);
        } else if (s.kind === "retire" && deleting.length > 0) {
          const key = deleting[s.pick % deleting.length]!;
          seats.retire(key);
          doubtful.add(key);
        } else if (s.kind === "watch") {
          seen = revision;
        }
      }
    }));
  },
);
