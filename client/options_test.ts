import assert from "node:assert/strict";
import { checkLockArguments, serverAddresses } from "./options.ts";

Deno.test({
  name: "serverAddresses() reads host, host:port and [ipv6]:port in order",
  permissions: "none",
  fn() {
    assert.deepEqual(serverAddresses({}), [
      { hostname: "127.0.0.1", port: 20934 },
    ]);
    assert.deepEqual(serverAddresses({ hostname: "db", port: 7 }), [
      { hostname: "db", port: 7 },
    ]);
    assert.deepEqual(
      serverAddresses({
        servers: ["a", "b:1", "[::1]:2", "[fd00::5]", "10.0.0.1:65535"],
        port: 9,
      }),
      [
        { hostname: "a", port: 9 },
        { hostname: "b", port: 1 },
        { hostname: "::1", port: 2 },
        { hostname: "fd00::5", port: 9 },
        { hostname: "10.0.0.1", port: 65535 },
      ],
    );
  },
});

Deno.test({
  name: "serverAddresses() refuses what is not an address, saying which",
  permissions: "none",
  fn() {
    for (const entry of ["", "::1", "a:", "a:0", "a:65536", "[::1", "a b:1x"]) {
      assert.throws(
        () => serverAddresses({ servers: [entry] }),
        (error: Error) =>
          error instanceof RangeError && error.message.includes(`"${entry}"`),
        entry,
      );
    }
  },
});

Deno.test({
  name: "checkLockArguments() accepts every valid combination",
  permissions: "none",
  fn() {
    checkLockArguments("x", {});
    checkLockArguments("x", {
      mode: "shared",
      wait: 0,
      signal: new AbortController().signal,
      onPosition: () => {},
      onContention: () => {},
    });
    checkLockArguments("x", { mode: "exclusive", wait: 2 ** 31 - 1 });
  },
});
