import assert from "node:assert/strict";
import fc from "fast-check";
import {
  DEFAULT_TOKEN_BLOCK,
  MAX_TOKEN,
  StateFileError,
  TokenStore,
  TokensUnavailableError,
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
    () => TokenStore.open(path, { block: 4 }),
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
    const tokens = TokenStore.open(path, { block: 5 });
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
    const tokens = TokenStore.open(`${dir}/state.json`, { block: 3 });
    const issued = Array.from({ length: 20 }, () => tokens.next());
    assert.deepEqual(issued, Array.from({ length: 20 }, (_, i) => i + 1));
  });
});

Deno.test("the next block is reserved once half of the current one is issued, not before", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    using tokens = TokenStore.open(path, { block: 4 });
    for (const expected of [1, 2]) {
      assert.equal(tokens.next(), expected);
      assert.deepEqual(stored(path), { version: 1, reserved: 4 });
    }
    assert.equal(tokens.next(), 3);
    assert.deepEqual(stored(path), { version: 1, reserved: 8 });
    assert.equal(tokens.reserved, 8);
    // No temporary file is left next to the state file.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [
      "state.json",
    ]);
  });
});

Deno.test("a failed reservation is retried in the background; no token of a block is issued before it is written", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/state.json`;
    const failures: (number | null)[] = [];
    const available = Promise.withResolvers<void>();
    using tokens = TokenStore.open(path, {
      block: 4,
      retryMinMs: 1,
      retryMaxMs: 4,
      onReserveFailed: (error, retryInMs) => {
        assert.match(error.message, /^Cannot write state file ".*": /);
        failures.push(retryInMs);
        // A folder where the temporary file goes makes the write fail (even
        // for root, unlike file permissions); freed after a few retries.
        if (failures.length === 5) Deno.removeSync(`${path}.tmp`);
      },
      onAvailable: () => available.resolve(),
    });
    assert.equal(tokens.next(), 1);
    assert.equal(tokens.next(), 2);
    Deno.mkdirSync(`${path}.tmp`);
    assert.equal(tokens.next(), 3);
    assert.equal(tokens.next(), 4);
    assert.equal(tokens.available, false);
    assert.throws(
      () => tokens.next(),
      (error: Error) =>
        error instanceof TokensUnavailableError &&
        error.code === "tokens_unavailable" &&
        error.cause instanceof StateFileError &&
        error.message ===
          `No fencing token available: cannot reserve more in state file "${path}"`,
    );
    assert.deepEqual(stored(path), { version: 1, reserved: 4 });
    await available.promise;
    // The backoff doubles up to its bound.
    assert.deepEqual(failures, [1, 2, 4, 4, 4]);
    assert.equal(tokens.failure, null);
    assert.equal(tokens.next(), 5);
    assert.deepEqual(stored(path), { version: 1, reserved: 8 });
  });
});

Deno.test("a state file less than a block below 2^53 is refused at start-up, and tokens never pass the safe range", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    for (const reserved of [MAX_TOKEN - 3, MAX_TOKEN - 1, MAX_TOKEN]) {
      Deno.writeTextFileSync(path, JSON.stringify({ version: 1, reserved }));
      assertRefused(
        path,
        new RegExp(
          `has reserved tokens up to ${reserved}, less than a block of 4 below the largest safe token ${MAX_TOKEN}: refusing to start`,
        ),
      );
      assert.deepEqual(stored(path), { version: 1, reserved });
    }
    Deno.writeTextFileSync(
      path,
      JSON.stringify({ version: 1, reserved: MAX_TOKEN - 6 }),
    );
    const failures: (number | null)[] = [];
    using tokens = TokenStore.open(path, {
      block: 4,
      onReserveFailed: (error, retryInMs) => {
        assert.match(error.message, /are used up: 9007199254740991 is the/);
        failures.push(retryInMs);
      },
    });
    const issued: number[] = [];
    while (tokens.available) issued.push(tokens.next());
    assert.deepEqual(issued, [5, 4, 3, 2, 1, 0].map((n) => MAX_TOKEN - n));
    assert.ok(issued.every(Number.isSafeInteger));
    assert.deepEqual(stored(path), { version: 1, reserved: MAX_TOKEN });
    assert.throws(() => tokens.next(), TokensUnavailableError);
    // No retry is scheduled: none could succeed.
    assert.deepEqual(failures, [null]);
  });
});

Deno.test("reopening resumes above every reserved token, even unissued ones", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    const first = TokenStore.open(path, { block: 10 });
    assert.equal(first.next(), 1);
    assert.equal(first.next(), 2);
    // As after kill -9: the first store is simply never used again.
    const second = TokenStore.open(path, { block: 10 });
    assert.equal(second.next(), 11);
    assert.deepEqual(stored(path), { version: 1, reserved: 20 });
    // Reopening without issuing anything still moves past the reservation.
    const third = TokenStore.open(path, { block: 10 });
    assert.equal(third.next(), 21);
  });
});

Deno.test("a state file written by hand is resumed from its reserved value", async () => {
  await inTempDir((dir) => {
    const path = `${dir}/state.json`;
    Deno.writeTextFileSync(path, '{"version":1,"reserved":41}');
    const tokens = TokenStore.open(path, { block: 4 });
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
            const tokens = TokenStore.open(path, { block });
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

/**
 * Runs `body` in a fresh 64 KiB tmpfs, unmounted and removed afterwards: a
 * real filesystem that a test can fill up.
 */
async function inTinyFilesystem(body: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "pklock-full-disk-" });
  try {
    await run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir);
    try {
      await body(dir);
    } finally {
      await run("umount", dir);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function run(command: string, ...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(command, {
    args,
    stdout: "null",
  }).output();
  const message = new TextDecoder().decode(stderr);
  assert.ok(success, `${command} ${args.join(" ")}: ${message}`);
}

/** Writes a file until the filesystem has no space left. */
function fill(path: string): void {
  using file = Deno.openSync(path, { write: true, create: true });
  const page = new Uint8Array(4096);
  assert.throws(() => {
    while (true) file.writeSync(page);
  }, /No space left on device|os error 28/);
}

Deno.test({
  name:
    "on a full disk the half block left is issued, then tokens_unavailable is reported without exiting, and issuing resumes once space is freed",
  // Mounting a tmpfs needs root.
  ignore: Deno.uid() !== 0,
  async fn() {
    await inTinyFilesystem(async (dir) => {
      const path = `${dir}/state.json`;
      const retries: (number | null)[] = [];
      const errors: string[] = [];
      const available = Promise.withResolvers<void>();
      using tokens = TokenStore.open(path, {
        block: 10,
        retryMinMs: 1,
        retryMaxMs: 8,
        onReserveFailed: (error, retryInMs) => {
          errors.push(error.message);
          retries.push(retryInMs);
          if (retries.length === 6) Deno.removeSync(`${dir}/filler`);
        },
        onAvailable: () => available.resolve(),
      });
      fill(`${dir}/filler`);
      const issued: number[] = [];
      while (tokens.available) issued.push(tokens.next());
      // The reservation failed at token 6; tokens 7 to 10 were reserved.
      assert.deepEqual(issued, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.match(errors[0]!, /^Cannot write state file ".*": No space left/);
      assert.throws(() => tokens.next(), TokensUnavailableError);
      assert.deepEqual(stored(path), { version: 1, reserved: 10 });
      await available.promise;
      assert.deepEqual(retries, [1, 2, 4, 8, 8, 8]);
      assert.equal(tokens.next(), 11);
      assert.deepEqual(stored(path), { version: 1, reserved: 20 });
    });
  },
});
