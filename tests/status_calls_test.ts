// status() calls made at once on one client: the server keeps one report per
// connection, so the client runs them one after another, in call order.
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { startServer } from "./helpers.ts";

/** 2,000 names of 100 characters: some 300 KB of report, ten pages or so. */
const NAMES = Array.from(
  { length: 2_000 },
  (_, i) => `status.${String(i).padStart(4, "0")}.`.padEnd(100, "x"),
);

Deno.test("two status() calls at once on one client both get the whole multi-page report", async () => {
  await using server = startServer();
  await using holder = await connect({ port: server.addr.port });
  await Promise.all(NAMES.map((name) => holder.lock(name)));
  await using client = await connect({ port: server.addr.port });

  const reports = await Promise.all([client.status(), client.status()]);
  for (const report of reports) {
    assert.deepEqual(report.locks.map((lock) => lock.name), NAMES);
    assert.deepEqual(report.totals, {
      locks: 2_000,
      holders: 2_000,
      waiters: 0,
    });
  }
});

Deno.test("a status() call waiting behind another ends with its signal, in call order", async () => {
  await using server = startServer();
  await using holder = await connect({ port: server.addr.port });
  await Promise.all(NAMES.map((name) => holder.lock(name)));
  await using client = await connect({ port: server.addr.port });

  const order: string[] = [];
  const controller = new AbortController();
  const first = client.status().then(() => order.push("first"));
  const second = client.status({ signal: controller.signal });
  const third = client.status({ pattern: "status.1*" }).then((report) => {
    order.push("third");
    return report;
  });
  controller.abort(new Error("given up"));
  await assert.rejects(second, /given up/);
  await first;
  assert.equal((await third).locks.length, 1_000);
  assert.deepEqual(order, ["first", "third"]);
});
