import assert from "node:assert/strict";
import { RemoteError } from "../../message/mod.ts";
import { CounterClient } from "./client.ts";
import { serveCounter } from "./server.ts";

Deno.test("a watcher sees every increment another client makes, in order", async () => {
  await using server = serveCounter();
  const port = server.addr.port;
  await using watcher = await CounterClient.connect({ port });
  await using incrementer = await CounterClient.connect({ port });
  const seen: number[] = [];
  const allSeen = Promise.withResolvers<void>();
  const start = await watcher.watch((value) => {
    seen.push(value);
    if (seen.length === 3) allSeen.resolve();
  });
  assert.equal(start, 0);
  assert.equal(await incrementer.increment(), 1);
  assert.equal(await incrementer.increment(5), 6);
  assert.equal(await incrementer.increment(-2), 4);
  await allSeen.promise;
  assert.deepEqual(seen, [1, 6, 4]);
  assert.equal(await watcher.get(), 4);
});

Deno.test("increment() refuses a step that is not an integer", async () => {
  await using server = serveCounter();
  await using client = await CounterClient.connect({ port: server.addr.port });
  await assert.rejects(client.increment(0.5), (error) => {
    assert.ok(error instanceof RemoteError);
    assert.equal(error.code, "invalid_parameters");
    return true;
  });
  assert.equal(await client.get(), 0);
});

Deno.test("the client CLI increments the counter and prints the new value", async () => {
  await using server = serveCounter();
  const client = `${import.meta.dirname}/client.ts`;
  const port = String(server.addr.port);
  const run = (...args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-net=127.0.0.1", client, port, ...args],
      stdin: "null",
    }).output();
  const increment = await run("increment", "3");
  assert.equal(increment.code, 0, new TextDecoder().decode(increment.stderr));
  assert.equal(new TextDecoder().decode(increment.stdout), "3\n");
  const get = await run("get");
  assert.equal(new TextDecoder().decode(get.stdout), "3\n");
});
