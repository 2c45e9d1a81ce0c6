// Prometheus metrics over real TCP and HTTP, checked against the text
// exposition format by tests/prometheus.ts.
import assert from "node:assert/strict";
import { connect, LockTimeoutError } from "../mod.ts";
import { serveMetrics } from "../server/metrics.ts";
import { WAIT_MS } from "./events.ts";
import {
  deadline,
  inTempDir,
  RawClient,
  runCli,
  settingsFile,
  spawnServer,
  startServer,
} from "./helpers.ts";
import { parseExposition, promtoolCheck, scrape } from "./prometheus.ts";
import { PROTOCOL_VERSION, VERSION } from "../protocol/version.ts";
import { ask, errorCode } from "./wire.ts";

/** Fetches a path, returning its status and body. */
async function get(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: string }> {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.text() };
}

/** A lock name that needs every escape a label value has. */
const ODD_NAME = 'jobs.say "hi"\\there\nline two';

Deno.test("/metrics follows a scripted workload exactly, in valid Prometheus text", async (t) => {
  const started = performance.now();
  await using server = startServer({ metrics: { lockPatterns: ["jobs.*"] } });
  await using http = serveMetrics(server.metrics!, {
    hostname: "127.0.0.1",
    port: 0,
  });
  const port = server.addr.port;
  await using a = await connect({ port });
  await using b = await connect({ port });
  // A grant without waiting, released by the client.
  const first = await a.lock("jobs.a");
  // A grant after waiting.
  const queued = b.lock("jobs.a");
  await b.ping(); // queued before the release
  await first.release();
  const second = await queued;
  // A lock matching no pattern, and one whose name needs escaping.
  const other = await a.lock("other.b");
  await (await a.lock(ODD_NAME)).release();
  // A wait that runs out, a busy lock.
  await assert.rejects(a.lock("jobs.a", { wait: 20 }), LockTimeoutError);
  assert.equal(await a.tryLock("jobs.a"), null);
  // An unknown command.
  await using raw = await RawClient.connect(port);
  assert.equal(
    errorCode(await raw.request({ command: "fly", id: 1 })),
    "unknown_command",
  );
  // A second request for a name its connection holds, which the client
  // library never sends: raw frames after hello (a legacy re-lock is ok).
  assert.equal((await ask(raw, { command: "hello", id: 2 }))?.id, 2);
  const lockRaw = { command: "lock", parameters: { lockName: "other.raw" } };
  assert.equal(
    (await ask(raw, { ...lockRaw, id: 3 }) as { result?: { status?: unknown } })
      ?.result?.status,
    "ok",
  );
  assert.equal(
    errorCode(await ask(raw, { ...lockRaw, id: 4 })),
    "already_held",
  );
  await ask(raw, {
    command: "release",
    parameters: { lockName: "other.raw" },
    id: 5,
  });
  // A held lock released because its holder's connection closed.
  await using c = await connect({ port });
  const inheriting = c.lock("other.b");
  await c.ping();
  await a.close();
  const inherited = await deadline(inheriting, WAIT_MS, "the inherited lock");
  // A waiter at scrape time.
  await using d = await connect({ port });
  const last = d.lock("jobs.a");
  await d.ping();

  const metrics = await scrape(http.addr.port);
  const value = (name: string, labels: Record<string, string> = {}) =>
    metrics.value(name, labels);
  await t.step("the totals, gauges and histograms count the workload", () => {
    assert.equal(value("pklock_connections_total"), 5); // a, b, raw, c, d
    assert.equal(value("pklock_connections"), 4); // a has gone
    assert.equal(value("pklock_grants_total"), 6);
    assert.equal(value("pklock_releases_total", { cause: "client" }), 3);
    assert.equal(value("pklock_releases_total", { cause: "disconnect" }), 1);
    assert.equal(value("pklock_releases_total", { cause: "force" }), undefined);
    assert.equal(value("pklock_wait_timeouts_total"), 1);
    assert.equal(
      value("pklock_protocol_errors_total", { code: "unknown_command" }),
      1,
    );
    assert.equal(
      value("pklock_protocol_errors_total", { code: "already_held" }),
      1,
    );
    assert.deepEqual(metrics.series("pklock_connections_rejected_total"), []);
    assert.equal(value("pklock_hold_alarms_total"), 0);
    assert.equal(value("pklock_wait_seconds_count"), 6);
    assert.equal(value("pklock_wait_seconds_bucket", { le: "+Inf" }), 6);
    assert.equal(value("pklock_hold_seconds_count"), 4);
    assert.equal(value("pklock_locks_held"), 2); // jobs.a by b, other.b by c
    assert.equal(value("pklock_locks_waiting"), 1); // d
    const answers = (status: string) =>
      value("pklock_lock_answers_total", { status });
    assert.equal(answers("ok"), 6);
    assert.equal(answers("busy"), 1);
    assert.equal(answers("timeout"), 1);
    assert.equal(answers("cancelled"), undefined);
    // other.b, inherited by c, is the oldest hold still held.
    const oldest = value("pklock_oldest_hold_seconds")!;
    assert.ok(oldest > 0 && oldest < (performance.now() - started) / 1000);
    assert.equal(
      value("pklock_build_info", {
        version: VERSION,
        protocol: String(PROTOCOL_VERSION),
        deno: Deno.version.deno,
      }),
      1,
    );
  });
  await t.step("promtool check metrics finds nothing to report", async () => {
    const problems = await promtoolCheck(await server.metrics!.render());
    if (problems === null) {
      console.log("promtool is not installed: skipped (CI installs it)");
      return;
    }
    assert.equal(problems, "");
  });
  await t.step(
    "per-lock series exist for the names matching jobs.* and only for them",
    () => {
      assert.equal(value("pklock_lock_grants_total", { lock: "jobs.a" }), 2);
      // A name nobody holds or waits for any more has no series left.
      assert.equal(
        value("pklock_lock_grants_total", { lock: ODD_NAME }),
        undefined,
      );
      assert.equal(value("pklock_lock_holders", { lock: "jobs.a" }), 1);
      assert.equal(value("pklock_lock_waiters", { lock: "jobs.a" }), 1);
      for (
        const name of [
          "pklock_lock_grants_total",
          "pklock_lock_holders",
          "pklock_lock_waiters",
        ]
      ) {
        const locks = metrics.series(name).map((sample) => sample.labels.lock);
        assert.ok(
          !locks.includes("other.b"),
          `${name} has a series for other.b`,
        );
      }
    },
  );
  await t.step(
    "every metric the server defines is there, with its type",
    () => {
      const types = Object.fromEntries(
        [...metrics.families.values()].map((
          family,
        ) => [family.name, family.type]),
      );
      assert.deepEqual(types, {
        pklock_connections: "gauge",
        pklock_connections_total: "counter",
        pklock_connections_rejected_total: "counter",
        pklock_locks_held: "gauge",
        pklock_locks_waiting: "gauge",
        pklock_grants_total: "counter",
        pklock_releases_total: "counter",
        pklock_wait_timeouts_total: "counter",
        pklock_audit_dropped_total: "counter",
        pklock_hold_alarms_total: "counter",
        pklock_protocol_errors_total: "counter",
        pklock_wait_seconds: "histogram",
        pklock_hold_seconds: "histogram",
        pklock_lock_grants_total: "counter",
        pklock_lock_holders: "gauge",
        pklock_lock_waiters: "gauge",
        pklock_build_info: "gauge",
        pklock_lock_answers_total: "counter",
        pklock_oldest_hold_seconds: "gauge",
      });
    },
  );

  await t.step(
    "/healthz answers ok, other paths 404 and POST 405",
    async () => {
      const base = `http://127.0.0.1:${http.addr.port}`;
      assert.deepEqual(await get(`${base}/healthz`), {
        status: 200,
        body: "ok\n",
      });
      assert.equal((await get(`${base}/elsewhere`)).status, 404);
      const head = await fetch(`${base}/metrics`, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.match(head.headers.get("content-type") ?? "", /^text\/plain/);
      assert.equal(await head.text(), "");
      assert.equal(
        (await get(`${base}/metrics`, { method: "POST", body: "" })).status,
        405,
      );
    },
  );

  await second.release();
  await (await deadline(last, WAIT_MS, "the last grant")).release();
  await inherited.release();
  await other.release(); // lost with a's connection: does nothing
});

Deno.test("the metrics count peers refused by the allow-list, a connection limit and authentication", async () => {
  {
    await using server = startServer({
      allowed: ["10.0.0.1"],
      metrics: {},
    });
    await using raw = await RawClient.connect(server.addr.port);
    assert.equal(await raw.next(), null);
    const metrics = parseExposition(await server.metrics!.render());
    assert.equal(
      metrics.value("pklock_connections_rejected_total", {
        cause: "allow_list",
      }),
      1,
    );
    assert.equal(metrics.value("pklock_connections_total"), 0);
  }
  const secret = "a shared secret for clients";
  await using server = startServer({
    secret,
    maxConnections: 2,
    metrics: {},
  });
  const port = server.addr.port;
  {
    await using raw = await RawClient.connect(port);
    const reply = await raw.request({
      command: "hello",
      parameters: { secret: "not the secret at all" },
      id: 1,
    });
    assert.equal(errorCode(reply), "auth_failed");
    assert.equal(await raw.next(), null);
  }
  await using _one = await connect({ port, secret });
  await using _two = await connect({ port, secret });
  {
    await using raw = await RawClient.connect(port);
    assert.equal(errorCode(await raw.next()), "too_many_connections");
    assert.equal(await raw.next(), null);
  }
  const metrics = parseExposition(await server.metrics!.render());
  const rejected = (cause: string) =>
    metrics.value("pklock_connections_rejected_total", { cause });
  assert.equal(rejected("auth"), 1);
  assert.equal(rejected("limit"), 1);
  assert.equal(rejected("allow_list"), undefined);
  const errors = (code: string) =>
    metrics.value("pklock_protocol_errors_total", { code });
  assert.equal(errors("auth_failed"), 1);
  assert.equal(errors("too_many_connections"), 1);
  assert.equal(metrics.value("pklock_connections_total"), 3);
  assert.equal(metrics.value("pklock_connections"), 2);
});

Deno.test("serve with metrics on prints the metrics URL and serves /metrics and /healthz there", async () => {
  await inTempDir(async (dir) => {
    const config = await settingsFile(dir, {
      metrics: { port: 0, lockPatterns: ["cli.*"] },
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const [, url] = await server.waitFor(
      /pklock metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)\n/,
    );
    await using client = await connect({ port });
    const lock = await client.lock("cli.one");
    const response = await fetch(url!);
    const metrics = parseExposition(await response.text());
    assert.equal(response.status, 200);
    assert.equal(metrics.value("pklock_grants_total"), 1);
    assert.equal(metrics.value("pklock_lock_holders", { lock: "cli.one" }), 1);
    assert.deepEqual(await get(url!.replace(/metrics$/, "healthz")), {
      status: 200,
      body: "ok\n",
    });
    await lock.release();
    server.kill("SIGTERM");
    const result = await deadline(server.result(), WAIT_MS, "the server exit");
    assert.equal(result.code, 0, result.stderr);
  });
});

Deno.test("serve refuses a metrics port in use before saying it listens", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await inTempDir(async (dir) => {
    const path = await settingsFile(dir, {
      port: 0,
      stateFile: `${dir}/state.json`,
      metrics: { port: taken.addr.port },
    });
    const result = await runCli(["serve", "--config", path]);
    assert.equal(result.code, 5);
    assert.match(result.stderr, /Cannot serve metrics on 127\.0\.0\.1:\d+/);
    assert.doesNotMatch(result.stdout, /listening on/);
  });
});

Deno.test("per-lock series of names that leave the table are deleted, so /metrics does not grow for good", async () => {
  await using server = startServer({ metrics: { lockPatterns: ["jobs.*"] } });
  await using client = await connect({ port: server.addr.port });
  const kept = await client.lock("jobs.kept");
  const cycle = async (i: number) =>
    await (await client.lock(`jobs.${i}`)).release();
  // Ten cycles first, so that every series with a value exists.
  for (let i = 0; i < 10; i++) await cycle(i);
  const lines = (text: string) => text.split("\n").length;
  const before = lines(await server.metrics!.render());
  // 50,000 such names grew /metrics from 3 KB to 2.3 MB, for good.
  for (let i = 10; i < 2_000; i++) {
    await cycle(i);
  }
  const text = await server.metrics!.render();
  const metrics = parseExposition(text);
  const locks = metrics.series("pklock_lock_grants_total").map((sample) =>
    sample.labels.lock
  );
  assert.deepEqual(locks, ["jobs.kept"]);
  // Not one series more: only values changed.
  assert.equal(lines(text), before);
  assert.equal(metrics.value("pklock_grants_total"), 2_001);
  await kept.release();
});
