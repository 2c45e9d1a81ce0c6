import assert from "node:assert/strict";
import fc from "fast-check";
import { LockTable } from "../server/lock_table.ts";
import type { Compare, KeyValue } from "./etcd_codec.ts";
import { freeNow, knownFrom } from "./free_now.ts";
import { LockMirror } from "./lock_mirror.ts";
import { lockPrefix, requestKey } from "./request_keys.ts";

const pure = { permissions: "none" } as const;
const ROOT = "/pklock/v1";

type Step =
  | { kind: "acquire"; name: string; exclusive: boolean; limit?: number }
  | { kind: "release"; pick: number }
  | { kind: "catch up" };

const steps = fc.array(
  fc.oneof(
    fc.record({
      kind: fc.constant("acquire" as const),
      name: fc.constantFrom("a", "b"),
      exclusive: fc.boolean(),
      limit: fc.constantFrom(1, 2, 3),
    }, { requiredKeys: ["kind", "name", "exclusive"] }),
    fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }),
    fc.record({ kind: fc.constant("catch up" as const) }),
  ),
  { maxLength: 80 },
);

interface Live {
  owner: object;
  name: string;
  kv: KeyValue;
}

type Event = { type: "put" | "delete"; kv: KeyValue };

/** What etcd answers a txn's compares: every key of a range must pass. */
function comparesHold(compares: Compare[], live: Live[]): boolean {
  return compares.every((compare) => {
    assert.equal(compare.target, "create");
    const inRange = live.filter((r) => r.kv.key.startsWith(compare.key));
    // An empty range is compared as one key with every field 0.
    const revisions = inRange.length > 0
      ? inRange.map((r) => r.kv.createRevision)
      : [0];
    return revisions.every((revision) =>
      compare.result === "=="
        ? revision === compare.value
        : compare.result === "<"
        ? revision < Number(compare.value)
        : assert.fail(`Unexpected compare ${compare.result}`)
    );
  });
}

Deno.test(
  "the mirror's grant rule, limit_mismatch and the acquire txn's compares agree with one server's lock table",
  pure,
  () => {
    fc.assert(
      fc.property(steps, (script: Step[]) => {
        const table = new LockTable<object, string>();
        const mirror = new LockMirror(ROOT);
        // A node's mirror that lags: it sees the events at "catch up" steps.
        const lagging = new LockMirror(ROOT);
        let unseen: Event[] = [];
        const live: Live[] = [];
        let revision = 1;
        const apply = (event: Event) => {
          mirror.apply([event], revision);
          unseen.push(event);
        };
        for (const step of script) {
          if (step.kind === "catch up") {
            lagging.apply(unseen, revision);
            unseen = [];
            continue;
          }
          revision++;
          if (step.kind === "acquire") {
            const { name } = step;
            const mode = step.exclusive ? "exclusive" : "shared";
            const limit = step.exclusive ? Infinity : step.limit ?? Infinity;
            const owner = {};
            const got = table.acquire(owner, name, mode, "", true, limit);
            const others = mirror.limit(name);
            const mismatch = !step.exclusive && others !== undefined &&
              others !== limit;
            if (got === "limit_mismatch") {
              assert.ok(mismatch);
              assert.equal(others, table.inspect(name)!.limit);
              continue;
            }
            assert.equal(typeof got, "object", got as string);
            assert.ok(!mismatch);
            const held = typeof got === "object" && got.held;
            const known = (of: LockMirror) => ({
              revision: of.revision,
              requests: of.queue(name),
            });
            const exact = freeNow(ROOT, name, mode, limit, known(mirror));
            assert.equal(
              comparesHold(exact, live),
              held,
              "with a current mirror",
            );
            const stale = freeNow(ROOT, name, mode, limit, known(lagging));
            if (comparesHold(stale, live)) assert.ok(held, "with a stale one");
            const key = requestKey(ROOT, {
              name,
              mode,
              limited: limit === Infinity ? undefined : true,
              node: "a1",
              seat: revision,
            });
            const value = JSON.stringify({
              conn: revision,
              since: 1,
              limit: limit === Infinity ? undefined : limit,
            });
            const kv = {
              key,
              value,
              createRevision: revision,
              modRevision: revision,
              lease: "1",
            };
            apply({ type: "put", kv });
            live.push({ owner, name, kv });
          } else if (live.length > 0) {
            const [gone] = live.splice(step.pick % live.length, 1);
            table.release(gone!.owner, gone!.name, []);
            apply({
              type: "delete",
              kv: { ...gone!.kv, modRevision: revision },
            });
          }
          for (const request of live) {
            const held = table.inspect(request.name)!.holders.some((r) =>
              r.owner === request.owner
            );
            assert.equal(mirror.holds(request.kv.key), held, request.kv.key);
          }
          for (const name of ["a", "b"]) {
            assert.equal(
              mirror.limit(name) ?? Infinity,
              table.inspect(name)?.limit ?? Infinity,
            );
          }
        }
      }),
      {
        numRuns: 1_000,
        // A stale mirror's compare must not pass one limited key it never saw.
        examples: [[[
          { kind: "catch up" },
          { kind: "acquire", name: "a", exclusive: false, limit: 1 },
          { kind: "acquire", name: "a", exclusive: false, limit: 1 },
        ]]],
      },
    );
  },
);

Deno.test(
  "freeNow() asks an exclusive request's lock to be empty, an unbounded shared one's to have no exclusive or limited key, a limited one's also no key it does not know",
  pure,
  () => {
    const none = (key: string) =>
      ({
        key,
        prefix: true,
        target: "create",
        result: "==",
        value: 0,
      }) as const;
    const known = (requests: { mode: "shared"; limit: number }[]) => ({
      revision: 9,
      requests,
    });
    assert.deepEqual(
      freeNow(ROOT, "j", "exclusive", Infinity, known([])),
      [none(`${ROOT}/q/j/`)],
    );
    assert.deepEqual(
      freeNow(ROOT, "j", "shared", Infinity, known([])),
      [none(`${ROOT}/q/j/x/`), none(`${ROOT}/q/j/l/`)],
    );
    const two = [
      { mode: "shared", limit: 3 },
      { mode: "shared", limit: 3 },
    ] as const;
    assert.deepEqual(
      freeNow(ROOT, "j", "shared", 3, known([...two])),
      [
        none(`${ROOT}/q/j/x/`),
        none(`${ROOT}/q/j/s/`),
        { ...none(`${ROOT}/q/j/l/`), result: "<", value: 10 },
      ],
    );
    const never = [{ ...none(lockPrefix(ROOT, "j")), result: "<" }];
    for (const limit of [2, 4]) {
      assert.deepEqual(
        freeNow(ROOT, "j", "shared", limit, known([...two])),
        never,
        `limit ${limit}`,
      );
    }
  },
);

Deno.test(
  "knownFrom() reads a listing's modes and the limits under l/, and skips keys that are not requests",
  pure,
  () => {
    const kv = (key: string, value: string) => ({
      key,
      value,
      createRevision: 2,
      modRevision: 2,
      lease: "1",
    });
    assert.deepEqual(
      knownFrom(ROOT, [
        kv(`${ROOT}/q/j/l/a.1`, '{"since":1,"limit":2}'),
        kv(`${ROOT}/q/j/l/a.2`, '{"since":1,"limit":0.5}'),
        kv(`${ROOT}/q/j/s/a.3`, '{"since":1,"limit":2}'),
        kv(`${ROOT}/q/j/x/a.4`, '{"since":1,"limit":2}'),
        kv(`${ROOT}/q/j/x/oops`, "{}"),
      ]),
      [
        { mode: "shared", limit: 2 },
        { mode: "shared", limit: Infinity },
        { mode: "shared", limit: Infinity },
        { mode: "exclusive", limit: Infinity },
      ],
    );
  },
);
