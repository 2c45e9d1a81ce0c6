import assert from "node:assert/strict";
import fc from "fast-check";
import { LockTable } from "../server/lock_table.ts";
import type { KeyValue } from "./etcd_codec.ts";
import { LockMirror } from "./lock_mirror.ts";
import { waitDeadlocks } from "./mirror_deadlock.ts";
import { ownerOf, requestKey } from "./request_keys.ts";

const pure = { permissions: "none" } as const;
const ROOT = "/pklock/v1";

type Step =
  | {
    kind: "acquire";
    owner: number;
    name: string;
    exclusive: boolean;
    limit?: number;
  }
  | { kind: "release"; pick: number };

const steps = fc.array(
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant("acquire" as const),
        owner: fc.nat({ max: 3 }),
        name: fc.constantFrom("a", "b", "c"),
        exclusive: fc.boolean(),
        limit: fc.constantFrom(1, 2),
      }, { requiredKeys: ["kind", "owner", "name", "exclusive"] }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("release" as const),
        pick: fc.nat(),
      }),
    },
  ),
  { maxLength: 60 },
);

Deno.test(
  "deadlock refusal on the mirror agrees with one server's lock table, semaphores included",
  pure,
  () => {
    let refusals = 0;
    fc.assert(
      fc.property(steps, (script: Step[]) => {
        const table = new LockTable<string, string>();
        const mirror = new LockMirror(ROOT);
        const live: { owner: string; name: string; kv: KeyValue }[] = [];
        let revision = 1;
        const put = (
          owner: number,
          name: string,
          exclusive: boolean,
          limit: number,
        ) => {
          revision++;
          const limited = !exclusive && limit !== Infinity ? true : undefined;
          const kv = {
            key: requestKey(ROOT, {
              name,
              mode: exclusive ? "exclusive" : "shared",
              limited,
              node: "a1",
              seat: revision,
            }),
            value: JSON.stringify({
              conn: owner,
              since: 1,
              limit: limited && limit,
            }),
            createRevision: revision,
            modRevision: revision,
            lease: "1",
          };
          mirror.apply([{ type: "put", kv }], revision);
          return kv;
        };
        const remove = (kv: KeyValue) => {
          revision++;
          const gone = { ...kv, modRevision: revision };
          mirror.apply([{ type: "delete", kv: gone }], revision);
        };
        for (const step of script) {
          if (step.kind === "release") {
            if (live.length === 0) continue;
            const [gone] = live.splice(step.pick % live.length, 1);
            table.release(gone!.owner, gone!.name, []);
            remove(gone!.kv);
            continue;
          }
          const owner = ownerOf("a1", step.owner);
          const { name, exclusive } = step;
          if (live.some((r) => r.owner === owner && r.name === name)) continue;
          const mode = exclusive ? "exclusive" : "shared";
          const limit = exclusive ? Infinity : step.limit ?? Infinity;
          const got = table.acquire(owner, name, mode, "", true, limit);
          if (got === "limit_mismatch") continue;
          const refused = waitDeadlocks(mirror, owner, name, { mode, limit });
          assert.equal(refused, got === "deadlock", `${owner} asks ${name}`);
          const kv = put(step.owner, name, exclusive, limit);
          const request = mirror.get(kv.key)!;
          const queued = !mirror.holds(kv.key);
          assert.equal(
            queued &&
              waitDeadlocks(mirror, owner, name, { mode, limit, request }),
            got === "deadlock",
            "once queued, as its node sees it first",
          );
          if (got === "deadlock") {
            refusals++;
            remove(kv);
          } else live.push({ owner, name, kv });
        }
      }),
      { numRuns: 500 },
    );
    assert.ok(refusals > 0, "some histories deadlock");
  },
);

Deno.test(
  "a cycle through a full semaphore is a deadlock only when no holder outside it can free a slot",
  pure,
  () => {
    for (const outside of [true, false]) {
      const mirror = new LockMirror(ROOT);
      const table = new LockTable<string, string>();
      let revision = 1;
      const ask = (conn: number, name: string, limit?: number) => {
        const owner = ownerOf("a1", conn);
        const mode = limit === undefined ? "exclusive" : "shared";
        const got = table.acquire(owner, name, mode, "", true, limit);
        revision++;
        const key = requestKey(ROOT, {
          name,
          mode,
          limited: limit === undefined ? undefined : true,
          node: "a1",
          seat: revision,
        });
        const value = JSON.stringify({ conn, since: 1, limit });
        const kv = {
          key,
          value,
          createRevision: revision,
          modRevision: revision,
          lease: "1",
        };
        mirror.apply([{ type: "put", kv }], revision);
        return got;
      };
      // Two slots of "pool": a1.1 and a1.2, or a1.1 and a1.9 who waits for
      // nothing. a1.3 holds "door" and waits for a slot; a1.2 waits for the
      // door.
      ask(1, "pool", 2);
      ask(outside ? 9 : 2, "pool", 2);
      ask(3, "door");
      ask(3, "pool", 2);
      ask(2, "door");
      const asked = { mode: "exclusive", limit: Infinity } as const;
      const refused = waitDeadlocks(mirror, "a1.1", "door", asked);
      assert.equal(refused, !outside);
      const got = table.acquire("a1.1", "door", "exclusive", "");
      assert.equal(got === "deadlock", refused, "as one server");
    }
  },
);

/** Puts exclusive requests of node `a` in one txn, at one revision. */
function putAt(
  mirror: LockMirror,
  revision: number,
  ...requests: { name: string; conn: number }[]
): string[] {
  const events = requests.map((parts, i) => {
    const key = requestKey(ROOT, {
      name: parts.name,
      mode: "exclusive",
      node: "a",
      seat: mirror.revision + 1 + i,
    });
    const value = JSON.stringify({ conn: parts.conn, since: 1 });
    const kv = { key, value, createRevision: revision, lease: "1" };
    return { type: "put" as const, kv: { ...kv, modRevision: revision } };
  });
  mirror.apply(events, revision);
  return events.map(({ kv }) => kv.key);
}

Deno.test(
  "of two requests queued by one txn that close a cycle, only the one whose key sorts last is refused",
  pure,
  () => {
    const mirror = new LockMirror(ROOT);
    putAt(mirror, 2, { name: "c1", conn: 1 }); // a.1 holds c1
    putAt(mirror, 3, { name: "c2", conn: 2 }); // a.2 holds c2
    const [waitsForC2, waitsForC1] = putAt(
      mirror,
      4,
      { name: "c2", conn: 1 }, // a.1 waits
      { name: "c1", conn: 2 }, // a.2 waits
    ) as [string, string];
    assert.ok(waitsForC2 > waitsForC1, "…/q/c2/… sorts after …/q/c1/…");
    const refused = (key: string, skip?: (r: { key: string }) => boolean) => {
      const request = mirror.get(key)!;
      return waitDeadlocks(mirror, request.owner, request.name, {
        mode: "exclusive",
        limit: Infinity,
        request,
        skip,
      });
    };
    assert.equal(refused(waitsForC2), true);
    assert.equal(refused(waitsForC1), false);
    assert.equal(
      refused(waitsForC2, (r) => r.key === waitsForC1),
      false,
      "a request known gone closes nothing",
    );
  },
);
