import assert from "node:assert/strict";
import fc from "fast-check";
import {
  DEFAULT_TOKEN_BLOCK,
  StateFileError,
  TokenStore,
} from "./token_store.ts";

/** Runs `body` with a fresh temporary folder, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir({ prefix: "pklock-tokens-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The state file as stored. */
function stored(path: string): unknown {
  return JSON.parse(Deno.readTextFileSync(path));
}

/** Asserts that opening `path` fails with a StateFileError naming it. */
function assertRefused(path: string, problem: RegExp): void {
  assert.throws(
    () => TokenStore.open(path, 4),
    (error: Error) => {
      assert.ok(error instanceof StateFileError, String(error));
      assert.equal(error.name, "StateFileError");
      assert.ok(error.message.includes(`"${path}"`), error.message);
      assert.match(error.message, problem);
      return true;
    },
  );
}

Deno.test("a missing state file starts at token 1 and is created with the first block reserved", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    const tokens = TokenStore.open(path, 5);
    // Reserved at open, before the first token is asked for.
    assert.deepEqual(stored(path), { version: 1, reserved: 5 });
    assert.equal(tokens.reserved, 5);
    assert.equal(tokens.next(), 1);
  });
});

Deno.test("open() without a block size reserves DEFAULT_TOKEN_BLOCK tokens", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    TokenStore.open(path);
    assert.deepEqual(stored(path), {
      version: 1,
      reserved: DEFAULT_TOKEN_BLOCK,
    });
  });
});

Deno.test("tokens strictly increase by one across block boundaries", async () => {
  await inTempDir((dir) => {
    const tokens = TokenStore.open(`${dir}/state.json`, 3);
    const issued = Array.from({ length: 20 }, () => tokens.next());
    assert.deepEqual(issued, Array.from({ length: 20 }, (_, i) => i + 1));
  });
});

Deno.test("a new block is reserved in the file when the current one is used up, not before", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    const tokens = TokenStore.open(path, 3);
    for (const expected of [1, 2, 3]) {
      assert.equal(tokens.next(), expected);
      assert.deepEqual(stored(path), { version: 1, reserved: 3 });
    }
    assert.equal(tokens.next(), 4);
    assert.deepEqual(stored(path), { version: 1, reserved: 6 });
    assert.equal(tokens.reserved, 6);
    // No temporary file is left next to the state file.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [
      "state.json",
    ]);
  });
});

Deno.test("no token of a new block is issued until its reservation is written", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    const tokens = TokenStore.open(path, 2);
    assert.equal(tokens.next(), 1);
    assert.equal(tokens.next(), 2);
    // A folder where the temporary file goes makes the next write fail (even
    // for root, unlike file permissions).
    Deno.mkdirSync(`${path}.tmp`);
    assert.throws(
      () => tokens.next(),
      (error: Error) =>
        error instanceof StateFileError &&
        error.message.startsWith(`Cannot write state file "${path}": `),
    );
    assert.deepEqual(stored(path), { version: 1, reserved: 2 });
    assert.equal(tokens.reserved, 2);
    // Once the file can be written again, issuing resumes where it stopped.
    Deno.removeSync(`${path}.tmp`);
    assert.equal(tokens.next(), 3);
    assert.deepEqual(stored(path), { version: 1, reserved: 4 });
  });
});

Deno.test("reopening resumes above every reserved token, even unissued ones", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    const first = TokenStore.open(path, 10);
    assert.equal(first.next(), 1);
    assert.equal(first.next(), 2);
    // As after kill -9: the first store is simply never used again.
    const second = TokenStore.open(path, 10);
    assert.equal(second.next(), 11);
    assert.deepEqual(stored(path), { version: 1, reserved: 20 });
    // Reopening without issuing anything still moves past the reservation.
    const third = TokenStore.open(path, 10);
    assert.equal(third.next(), 21);
  });
});

Deno.test("a state file written by hand is resumed from its reserved value", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    Deno.writeTextFileSync(path, '{"version":1,"reserved":41}');
    const tokens = TokenStore.open(path, 4);
    assert.equal(tokens.next(), 42);
    assert.deepEqual(stored(path), { version: 1, reserved: 45 });
  });
});

Deno.test("tokens never repeat or go back over any sequence of runs", async () => {
  await inTempDir((dir) => {
    let run = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.integer({ min: 0, max: 12 }), {
          minLength: 1,
          maxLength: 6,
        }),
        (block, runs) => {
          const path = `${dir}/state-${run++}.json`;
          let last = 0;
          for (const count of runs) {
            const tokens = TokenStore.open(path, block);
            for (let i = 0; i < count; i++) {
              const token = tokens.next();
              assert.ok(token > last, `${token} after ${last}`);
              assert.ok(token <= tokens.reserved);
              assert.ok(
                token <= (stored(path) as { reserved: number }).reserved,
              );
              last = token;
            }
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});

for (
  const [label, text] of [
    ["is not JSON", '{"version":1,"reserved":'],
    ["is empty", ""],
    ["is JSON null", "null"],
    ["has another version", '{"version":2,"reserved":10}'],
    ["has no version", '{"reserved":10}'],
    ["has no reserved value", '{"version":1}'],
    ["has a negative reserved value", '{"version":1,"reserved":-1}'],
    ["has a fractional reserved value", '{"version":1,"reserved":1.5}'],
    ["has a string reserved value", '{"version":1,"reserved":"10"}'],
    ["has an unsafe reserved value", '{"version":1,"reserved":1e300}'],
  ] as const
) {
  Deno.test(`a state file that ${label} is refused, naming the file, and left as it was`, async () => {
    await inTempDir((dir) => {
      const path = `${dir}/state.json`;
      Deno.writeTextFileSync(path, text);
      assertRefused(path, /is corrupt: expected \{"version":1,"reserved":N\}/);
      assert.equal(Deno.readTextFileSync(path), text);
    });
  });
}

Deno.test("a state file in a missing folder is refused at open", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/missing/state.json`;
    assertRefused(path, /^Cannot write state file ".*": /);
  });
});

Deno.test("a state file path that is a folder is refused at open", async () => {
  await inTempDir((dir) => {
    assertRefused(dir, /^Cannot read state file ".*": /);
  });
});

Deno.test("a state file that cannot be replaced is refused at open", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    Deno.writeTextFileSync(path, '{"version":1,"reserved":7}');
    Deno.mkdirSync(`${path}.tmp`);
    assertRefused(path, /^Cannot write state file ".*": /);
    assert.deepEqual(stored(path), { version: 1, reserved: 7 });
  });
});
