import assert from "node:assert/strict";
import fc from "fast-check";
import { LockTable } from "../server/lock_table.ts";
import { freeNow, knownFrom, sharedFits } from "./free_now.ts";
import { LockMirror } from "./lock_mirror.ts";
import { lockPrefix, requestKey } from "./request_keys.ts";

const pure = { permissions: "none" } as const;
const ROOT = "/pklock/v1";

type Step =
  | { kind: "acquire"; name: string; exclusive: boolean; limit?: number }
  | { kind: "release"; pick: number };

const steps = fc.array(
  fc.oneof(
    fc.record({
      kind: fc.constant("acquire" as const),
      name: fc.constantFrom("a", "b"),
      exclusive: fc.boolean(),
      limit: fc.constantFrom(1, 2, 3),
    }, { requiredKeys: ["kind", "name", "exclusive"] }),
    fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }),
  ),
  { maxLength: 80 },
);

interface Live {
  owner: object;
  name: string;
  key: string;
}

Deno.test(
  "the mirror's grant rule, limit_mismatch and grants at once agree with one server's lock table",
  pure,
  () => {
    fc.assert(fc.property(steps, (script: Step[]) => {
      const table = new LockTable<object, string>();
      const mirror = new LockMirror(ROOT);
      const live: Live[] = [];
      let revision = 1;
      for (const step of script) {
        revision++;
        if (step.kind === "acquire") {
          const mode = step.exclusive ? "exclusive" : "shared";
          const limit = step.exclusive ? Infinity : step.limit ?? Infinity;
          const owner = {};
          const got = table.acquire(owner, step.name, mode, "", true, limit);
          const mismatch = step.exclusive
            ? undefined
            : mirror.mismatch(step.name, limit);
          if (got === "limit_mismatch") {
            assert.notEqual(mismatch, undefined);
            assert.equal(mismatch, table.inspect(step.name)!.limit);
            continue;
          }
          assert.equal(typeof got, "object", got as string);
          assert.equal(mismatch, undefined);
          const queue = mirror.queue(step.name);
          const atOnce = step.exclusive
            ? queue.length === 0
            : queue.every((r) => r.mode === "shared") &&
              sharedFits(queue, limit);
          assert.equal(atOnce, typeof got === "object" && got.held);
          const key = requestKey(ROOT, {
            name: step.name,
            mode,
            node: "a1",
            conn: revision,
            seq: revision,
          });
          const value = JSON.stringify({
            since: 1,
            limit: limit === Infinity ? undefined : limit,
          });
          mirror.apply([{
            type: "put",
            kv: {
              key,
              value,
              createRevision: revision,
              modRevision: revision,
              lease: "1",
            },
          }], revision);
          live.push({ owner, name: step.name, key });
        } else if (live.length > 0) {
          const [gone] = live.splice(step.pick % live.length, 1);
          table.release(gone!.owner, gone!.name, []);
          mirror.apply([{
            type: "delete",
            kv: {
              key: gone!.key,
              value: "",
              createRevision: 0,
              modRevision: revision,
              lease: "0",
            },
          }], revision);
        }
        for (const request of live) {
          const held = table.inspect(request.name)!.holders.some((r) =>
            r.owner === request.owner
          );
          assert.equal(mirror.holds(request.key), held, request.key);
        }
        for (const name of ["a", "b"]) {
          assert.equal(
            mirror.limit(name),
            table.inspect(name)?.limit ?? Infinity,
          );
        }
      }
    }));
  },
);

Deno.test(
  "freeNow() asks an exclusive request's lock to be empty, a shared one's to have no exclusive key and no shared key the node does not know",
  pure,
  () => {
    const empty = { prefix: true, target: "create" } as const;
    assert.deepEqual(
      freeNow(ROOT, "j", "exclusive", Infinity, { revision: 9, requests: [] }),
      [{ ...empty, key: lockPrefix(ROOT, "j"), result: "==", value: 0 }],
    );
    const two = [
      { mode: "shared", limit: 3 },
      { mode: "shared", limit: 3 },
    ] as const;
    assert.deepEqual(
      freeNow(ROOT, "j", "shared", 3, { revision: 9, requests: two }),
      [
        { ...empty, key: `${ROOT}/q/j/x/`, result: "==", value: 0 },
        { ...empty, key: `${ROOT}/q/j/s/`, result: "<", value: 10 },
      ],
    );
    const never = [{
      ...empty,
      key: lockPrefix(ROOT, "j"),
      result: "<",
      value: 0,
    }];
    for (const limit of [2, 4, Infinity]) {
      assert.deepEqual(
        freeNow(ROOT, "j", "shared", limit, { revision: 9, requests: two }),
        never,
        `limit ${limit}`,
      );
    }
  },
);

Deno.test(
  "knownFrom() reads a listing's modes and limits, and skips keys that are not requests",
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
        kv(`${ROOT}/q/j/s/a.1.1`, '{"since":1,"limit":2}'),
        kv(`${ROOT}/q/j/s/a.2.2`, '{"since":1,"limit":0.5}'),
        kv(`${ROOT}/q/j/x/a.3.3`, '{"since":1,"limit":2}'),
        kv(`${ROOT}/q/j/x/oops`, "{}"),
      ]),
      [
        { mode: "shared", limit: 2 },
        { mode: "shared", limit: Infinity },
        { mode: "exclusive", limit: Infinity },
      ],
    );
  },
);
