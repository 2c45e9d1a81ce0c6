// Operating pklock in production, proven over real TCP and real processes:
// Prometheus metrics (checked against the text exposition format by a parser
// written here), hold-time alarms, contention notices, the audit log, forced
// release, client labels and JSON logs.
import assert from "node:assert/strict";
import {
  connect,
  ConnectionError,
  type ContentionEvent,
  type HoldAlarmEvent,
  type Lock,
  LockLostError,
  LockTimeoutError,
  type Message,
  type StatusLock,
} from "../mod.ts";
import { AuditLog } from "../server/audit.ts";
import { serveMetrics } from "../server/metrics.ts";
import {
  cli,
  deadline,
  RawClient,
  runCli,
  spawnServer,
  startServer,
} from "./helpers.ts";

/** How long any one awaited event may take before the test fails. */
const WAIT_MS = 10_000;

/** An admin secret long enough for the settings file (16 characters or more). */
const ADMIN = "operators-only-0123456789";

// ---------------------------------------------------------------------------
// Shared helpers

/** The `code` of an error reply, or `undefined`. */
function errorCode(message: Message | null): unknown {
  return (message?.error as { code?: unknown } | undefined)?.code;
}

/** Matches a RemoteError with this code, for assert.rejects. */
function remote(code: string): { name: string; code: string } {
  return { name: "RemoteError", code };
}

/** Runs `body` with a fresh temporary folder, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-ops-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes a settings file in `dir` and returns its path. */
async function settingsFile(dir: string, settings: object): Promise<string> {
  const path = `${dir}/settings.jsonc`;
  await Deno.writeTextFile(path, JSON.stringify(settings, null, 2));
  return path;
}

/** The detail of the next event of this type on a target. */
function nextEvent<T>(target: EventTarget, type: string): Promise<T> {
  return new Promise((resolve) =>
    target.addEventListener(
      type,
      (event) => resolve((event as CustomEvent<T>).detail),
      { once: true },
    )
  );
}

/** Resolves once the lock is lost. */
function lost(lock: Lock): Promise<unknown> {
  if (lock.lost.aborted) return Promise.resolve(lock.lost.reason);
  return new Promise((resolve) =>
    lock.lost.addEventListener("abort", () => resolve(lock.lost.reason), {
      once: true,
    })
  );
}

/** Values pushed by callbacks, taken one at a time by the test. */
class Inbox<T> {
  readonly #items: T[] = [];
  readonly #takers: Array<(item: T) => void> = [];

  /** Delivers a value; usable as a callback. */
  readonly push = (item: T): void => {
    const taker = this.#takers.shift();
    if (taker) taker(item);
    else this.#items.push(item);
  };

  /** Values delivered and not taken yet. */
  get pending(): readonly T[] {
    return this.#items;
  }

  /** The next value, within the deadline. */
  next(what: string): Promise<T> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return deadline(
      new Promise<T>((resolve) => this.#takers.push(resolve)),
      WAIT_MS,
      what,
    );
  }
}

// ---------------------------------------------------------------------------
// A checker of the Prometheus text exposition format (version 0.0.4)

/** One sample line. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A metric family: its HELP and TYPE lines and the samples that follow. */
interface Family {
  name: string;
  help: string;
  type: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
/** What Go's strconv.ParseFloat, which Prometheus uses, accepts. */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const SPECIAL = /^([+-]?)(inf|infinity|nan)$/i;

/** A parsed and checked exposition. */
class Exposition {
  readonly families: ReadonlyMap<string, Family>;

  constructor(families: ReadonlyMap<string, Family>) {
    this.families = families;
  }

  /** Every sample named `name`. */
  series(name: string): Sample[] {
    return [...this.families.values()].flatMap((family) =>
      family.samples.filter((sample) => sample.name === name)
    );
  }

  /** The value of the sample with exactly these labels, if present. */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    const wanted = seriesKey(name, labels);
    return this.series(name).find((sample) =>
      seriesKey(sample.name, sample.labels) === wanted
    )?.value;
  }
}

function seriesKey(name: string, labels: Record<string, string>): string {
  const sorted = Object.entries(labels).sort(([a], [b]) => a < b ? -1 : 1);
  return `${name}${JSON.stringify(sorted)}`;
}

function parseValue(text: string, where: string): number {
  const special = text.match(SPECIAL);
  if (special) {
    const [, sign, word] = special;
    if (word!.toLowerCase() === "nan") return NaN;
    return sign === "-" ? -Infinity : Infinity;
  }
  assert.match(text, DECIMAL, `${where}: "${text}" is not a number`);
  return Number(text);
}

/** Whether a sample name belongs to a family of this type. */
function belongs(sample: string, family: Family): boolean {
  const { name, type } = family;
  if (type === "histogram") {
    return [`${name}_bucket`, `${name}_sum`, `${name}_count`].includes(sample);
  }
  if (type === "summary") {
    return [name, `${name}_sum`, `${name}_count`].includes(sample);
  }
  return sample === name;
}

/** Parses `name{label="value",...} value [timestamp]`. */
function parseSample(line: string, where: string): Sample {
  const name = line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/)?.[0];
  assert.ok(name, `${where}: no valid metric name`);
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === "{") {
    at++;
    while (line[at] !== "}") {
      const label = line.slice(at).match(LABEL_NAME)?.[0];
      assert.ok(label, `${where}: invalid label name at column ${at + 1}`);
      assert.ok(!(label in labels), `${where}: label "${label}" repeated`);
      at += label.length;
      assert.equal(line.slice(at, at + 2), '="', `${where}: expected ="`);
      at += 2;
      let value = "";
      while (true) {
        const char = line[at];
        assert.ok(char !== undefined, `${where}: unterminated label value`);
        if (char === '"') break;
        if (char === "\\") {
          const escaped = line[at + 1];
          const decoded = escaped === "\\"
            ? "\\"
            : escaped === '"'
            ? '"'
            : escaped === "n"
            ? "\n"
            : undefined;
          assert.ok(
            decoded !== undefined,
            `${where}: invalid escape \\${escaped}`,
          );
          value += decoded;
          at += 2;
        } else {
          value += char;
          at++;
        }
      }
      at++;
      labels[label] = value;
      if (line[at] === ",") at++;
      else assert.equal(line[at], "}", `${where}: expected , or }`);
    }
    at++;
  }
  assert.equal(line[at], " ", `${where}: expected a space before the value`);
  const fields = line.slice(at + 1).split(" ");
  assert.ok(
    fields.length === 1 || (fields.length === 2 && /^-?\d+$/.test(fields[1]!)),
    `${where}: expected a value and at most a timestamp`,
  );
  return { name, labels, value: parseValue(fields[0]!, where) };
}

/** Checks the buckets, sum and count of every series of a histogram. */
function checkHistogram(family: Family): void {
  const groups = new Map<string, { le: number; count: number }[]>();
  const strip = (labels: Record<string, string>) => {
    const { le: _, ...rest } = labels;
    return seriesKey(family.name, rest);
  };
  for (const sample of family.samples) {
    if (sample.name !== `${family.name}_bucket`) continue;
    const le = sample.labels.le;
    assert.ok(le !== undefined, `${family.name}_bucket without an "le" label`);
    const key = strip(sample.labels);
    const buckets = groups.get(key) ?? [];
    buckets.push({
      le: parseValue(le, `${family.name} le`),
      count: sample.value,
    });
    groups.set(key, buckets);
  }
  assert.ok(groups.size > 0, `histogram ${family.name} has no buckets`);
  for (const [key, buckets] of groups) {
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(
        buckets[i]!.le > buckets[i - 1]!.le,
        `${key}: le not increasing`,
      );
      assert.ok(
        buckets[i]!.count >= buckets[i - 1]!.count,
        `${key}: bucket counts are not cumulative`,
      );
    }
    const last = buckets.at(-1)!;
    assert.equal(last.le, Infinity, `${key}: no le="+Inf" bucket`);
    const others = family.samples.filter((sample) =>
      strip(sample.labels) === key
    );
    const count = others.find((s) => s.name === `${family.name}_count`);
    const sum = others.find((s) => s.name === `${family.name}_sum`);
    assert.ok(count, `${key}: no _count`);
    assert.ok(sum, `${key}: no _sum`);
    assert.equal(
      last.count,
      count.value,
      `${key}: +Inf bucket differs from _count`,
    );
  }
}

/**
 * Parses the text format and checks its rules: HELP and TYPE before each
 * family's samples, one group per family, valid names, quoted and escaped
 * label values, numeric values, counters ending in `_total`, cumulative
 * histogram buckets whose `+Inf` bucket equals `_count`.
 */
function parseExposition(text: string): Exposition {
  assert.ok(
    text.endsWith("\n"),
    "the exposition does not end with a line feed",
  );
  const families = new Map<string, Family>();
  const helps = new Map<string, string>();
  const series = new Set<string>();
  let current: Family | undefined;
  text.slice(0, -1).split("\n").forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line)})`;
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const match = line.match(/^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t](.*))?$/);
      if (match === null) return; // a plain comment
      const [, keyword, name, rest = ""] = match as unknown as string[];
      assert.match(name!, METRIC_NAME, `${where}: invalid metric name`);
      if (keyword === "HELP") {
        assert.ok(!helps.has(name!), `${where}: a second HELP for ${name}`);
        assert.match(rest, /^(?:[^\\]|\\[\\n])*$/, `${where}: bad escape`);
        helps.set(name!, rest);
        return;
      }
      assert.ok(TYPES.has(rest), `${where}: unknown type "${rest}"`);
      assert.ok(!families.has(name!), `${where}: a second TYPE for ${name}`);
      current = { name: name!, help: "", type: rest, samples: [] };
      families.set(name!, current);
      return;
    }
    const sample = parseSample(line, where);
    assert.ok(
      current !== undefined && belongs(sample.name, current),
      `${where}: a sample with no TYPE line right before its group`,
    );
    const help = helps.get(current.name);
    assert.ok(help !== undefined, `${where}: no HELP line for ${current.name}`);
    current.help = help;
    if (current.type === "counter") {
      assert.match(sample.name, /_total$/, `${where}: a counter not in _total`);
      assert.ok(sample.value >= 0, `${where}: a negative counter`);
    }
    const key = seriesKey(sample.name, sample.labels);
    assert.ok(!series.has(key), `${where}: a repeated series`);
    series.add(key);
    current.samples.push(sample);
  });
  for (const family of families.values()) {
    if (family.type === "histogram" && family.samples.length > 0) {
      checkHistogram(family);
    }
  }
  return new Exposition(families);
}

/** Scrapes `/metrics` over HTTP and checks the exposition. */
async function scrape(port: number): Promise<Exposition> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  assert.match(
    response.headers.get("content-type") ?? "",
    /^text\/plain; version=0\.0\.4/,
  );
  return parseExposition(text);
}

/** Fetches a path, returning its status and body. */
async function get(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: string }> {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.text() };
}

// ---------------------------------------------------------------------------
// Metrics

Deno.test("the exposition checker accepts valid text and rejects each broken rule", () => {
  const valid = [
    "# HELP a_total Things, with a \\\\ and a \\n.",
    "# TYPE a_total counter",
    'a_total{code="say \\"hi\\"\\\\\\n"} 3',
    "# HELP h Durations.",
    "# TYPE h histogram",
    'h_bucket{le="0.1"} 1',
    'h_bucket{le="1"} 2',
    'h_bucket{le="+Inf"} 2',
    "h_sum 0.5",
    "h_count 2",
    "",
  ].join("\n");
  const parsed = parseExposition(valid);
  assert.equal(parsed.value("a_total", { code: 'say "hi"\\\n' }), 3);
  assert.equal(parsed.value("h_count"), 2);
  const broken: [string, string, RegExp][] = [
    ["a sample without HELP and TYPE", "x 1\n", /no TYPE line/],
    ["a sample without HELP", "# TYPE x gauge\nx 1\n", /no HELP line/],
    [
      "an invalid name",
      "# HELP 1x a\n# TYPE 1x gauge\n1x 1\n",
      /invalid metric name/,
    ],
    [
      "an unquoted label value",
      "# HELP x a\n# TYPE x gauge\nx{a=b} 1\n",
      /expected ="/,
    ],
    [
      "an invalid escape",
      '# HELP x a\n# TYPE x gauge\nx{a="\\t"} 1\n',
      /invalid escape/,
    ],
    [
      "an invalid escape in HELP",
      "# HELP x a \\t\n# TYPE x gauge\nx 1\n",
      /bad escape/,
    ],
    [
      "an unterminated value",
      '# HELP x a\n# TYPE x gauge\nx{a="b} 1\n',
      /unterminated/,
    ],
    [
      "a value that is no number",
      "# HELP x a\n# TYPE x gauge\nx one\n",
      /not a number/,
    ],
    [
      "a counter not in _total",
      "# HELP c a\n# TYPE c counter\nc 1\n",
      /not in _total/,
    ],
    [
      "a missing final line feed",
      "# HELP x a\n# TYPE x gauge\nx 1",
      /line feed/,
    ],
    [
      "buckets that are not cumulative",
      '# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      /not cumulative/,
    ],
    [
      "a +Inf bucket that differs from _count",
      '# HELP h a\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
      /differs from _count/,
    ],
    [
      "a histogram without a +Inf bucket",
      '# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n',
      /no le="\+Inf"/,
    ],
    [
      "a family split in two groups",
      "# HELP x a\n# TYPE x gauge\n# HELP y a\n# TYPE y gauge\ny 1\nx 1\n",
      /no TYPE line/,
    ],
  ];
  for (const [what, text, why] of broken) {
    assert.throws(() => parseExposition(text), why, what);
  }
});

/** A lock name that needs every escape a label value has. */
const ODD_NAME = 'jobs.say "hi"\\there\nline two';

Deno.test("/metrics follows a scripted workload exactly, in valid Prometheus text", async () => {
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
  // A refused duplicate, a wait that runs out, a busy lock.
  await assert.rejects(b.lock("jobs.a"), remote("already_held"));
  await assert.rejects(a.lock("jobs.a", { wait: 20 }), LockTimeoutError);
  assert.equal(await a.tryLock("jobs.a"), null);
  // An unknown command.
  await using raw = await RawClient.connect(port);
  assert.equal(
    errorCode(await raw.request({ command: "fly", id: 1 })),
    "unknown_command",
  );
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
  assert.equal(value("pklock_connections_total"), 5); // a, b, raw, c, d
  assert.equal(value("pklock_connections"), 4); // a has gone
  assert.equal(value("pklock_grants_total"), 5);
  assert.equal(value("pklock_releases_total", { cause: "client" }), 2);
  assert.equal(value("pklock_releases_total", { cause: "disconnect" }), 1);
  assert.equal(value("pklock_releases_total", { cause: "force" }), undefined);
  assert.equal(value("pklock_wait_timeouts_total"), 1);
  assert.equal(
    value("pklock_protocol_errors_total", { code: "already_held" }),
    1,
  );
  assert.equal(
    value("pklock_protocol_errors_total", { code: "unknown_command" }),
    1,
  );
  assert.deepEqual(metrics.series("pklock_connections_rejected_total"), []);
  assert.equal(value("pklock_hold_alarms_total"), 0);
  assert.equal(value("pklock_wait_seconds_count"), 5);
  assert.equal(value("pklock_wait_seconds_bucket", { le: "+Inf" }), 5);
  assert.equal(value("pklock_hold_seconds_count"), 3);
  assert.equal(value("pklock_locks_held"), 2); // jobs.a by b, other.b by c
  assert.equal(value("pklock_locks_waiting"), 1); // d
  // Per-lock series for the names matching jobs.*, and only for them.
  assert.equal(value("pklock_lock_grants_total", { lock: "jobs.a" }), 2);
  assert.equal(value("pklock_lock_grants_total", { lock: ODD_NAME }), 1);
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
    assert.ok(!locks.includes("other.b"), `${name} has a series for other.b`);
  }
  // Every metric the server defines is there, with its type.
  const types = Object.fromEntries(
    [...metrics.families.values()].map((family) => [family.name, family.type]),
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
    pklock_hold_alarms_total: "counter",
    pklock_protocol_errors_total: "counter",
    pklock_wait_seconds: "histogram",
    pklock_hold_seconds: "histogram",
    pklock_lock_grants_total: "counter",
    pklock_lock_holders: "gauge",
    pklock_lock_waiters: "gauge",
  });

  const base = `http://127.0.0.1:${http.addr.port}`;
  assert.deepEqual(await get(`${base}/healthz`), { status: 200, body: "ok\n" });
  assert.equal((await get(`${base}/elsewhere`)).status, 404);
  assert.equal(
    (await get(`${base}/metrics`, { method: "POST", body: "" })).status,
    405,
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

// ---------------------------------------------------------------------------
// Hold-time alarms

const ALARMS = { holdTime: 100, rules: [{ pattern: "slow*", holdTime: 50 }] };

Deno.test("a hold past its alarm threshold dispatches an alarm event and the lock stays held", async () => {
  await using server = startServer({ alarms: ALARMS, metrics: {} });
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using other = await connect({ port });
  const slow = await holder.lock("slow-1");
  const slowAlarm = nextEvent<HoldAlarmEvent>(slow, "alarm");
  const plain = await holder.lock("plain");
  const plainAlarm = nextEvent<HoldAlarmEvent>(plain, "alarm");

  const slowDetail = await deadline(slowAlarm, WAIT_MS, "the slow-1 alarm");
  assert.equal(slowDetail.event, "hold_alarm");
  assert.equal(slowDetail.lockName, "slow-1");
  assert.equal(slowDetail.token, slow.token);
  assert.equal(slowDetail.threshold, 50); // the rule's
  assert.ok(slowDetail.heldFor >= 50, `heldFor ${slowDetail.heldFor}`);
  const plainDetail = await deadline(plainAlarm, WAIT_MS, "the plain alarm");
  assert.equal(plainDetail.lockName, "plain");
  assert.equal(plainDetail.token, plain.token);
  assert.equal(plainDetail.threshold, 100); // the default
  assert.ok(plainDetail.heldFor >= 100, `heldFor ${plainDetail.heldFor}`);

  // Advice only: both are still held.
  for (const lock of [slow, plain]) {
    assert.equal(lock.held, true);
    assert.equal(await other.tryLock(lock.name), null, lock.name);
  }
  const metrics = parseExposition(await server.metrics!.render());
  assert.equal(metrics.value("pklock_hold_alarms_total"), 2);
  await slow.release();
  await plain.release();
});

Deno.test("no alarm is raised for a lock released before its threshold", async () => {
  await using server = startServer({ alarms: ALARMS, metrics: {} });
  await using raw = await RawClient.connect(server.addr.port);
  const lock = (id: number, lockName: string) =>
    raw.request({ command: "lock", parameters: { lockName }, id });
  assert.equal((await lock(1, "slow-brief"))?.id, 1); // threshold 50 ms
  assert.deepEqual(
    await raw.request({
      command: "release",
      parameters: { lockName: "slow-brief" },
      id: 2,
    }),
    { id: 2, result: { status: "ok" } },
  );
  // Taken after the release, with a longer threshold: any alarm for
  // slow-brief would have come before this one.
  const later = await lock(3, "later");
  const alarm = await deadline(raw.next(), WAIT_MS, "the alarm for later");
  assert.equal(alarm?.event, "hold_alarm");
  assert.equal(alarm?.lockName, "later");
  assert.equal(alarm?.token, (later?.result as { token: number }).token);
  assert.equal(alarm?.threshold, 100);
  const metrics = parseExposition(await server.metrics!.render());
  assert.equal(metrics.value("pklock_hold_alarms_total"), 1);
});

// ---------------------------------------------------------------------------
// Contention notices

Deno.test("a holder that asked is told how many wait as waiters arrive and leave", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using first = await connect({ port });
  await using second = await connect({ port });
  await using third = await connect({ port });
  const counts = new Inbox<number>();
  const lock = await holder.lock("hot", { onContention: counts.push });
  const events: ContentionEvent[] = [];
  lock.addEventListener("contention", (event) => {
    events.push((event as CustomEvent<ContentionEvent>).detail);
  });

  const firstGranted = first.lock("hot");
  assert.equal(await counts.next("1 waiter"), 1);
  const controller = new AbortController();
  const secondGranted = second.lock("hot", { signal: controller.signal });
  assert.equal(await counts.next("2 waiters"), 2);
  controller.abort(new Error("no longer needed"));
  await assert.rejects(secondGranted, /no longer needed/);
  assert.equal(await counts.next("1 waiter after the abort"), 1);
  // A wait that runs out, and a waiter whose connection closes, leave too.
  const thirdGranted = third.lock("hot", { wait: 30 });
  assert.equal(await counts.next("2 waiters again"), 2);
  await assert.rejects(thirdGranted, LockTimeoutError);
  assert.equal(await counts.next("1 waiter after the timeout"), 1);
  const firstFailed = assert.rejects(firstGranted, ConnectionError);
  await first.close();
  await firstFailed;
  assert.equal(await counts.next("no waiter"), 0);

  assert.deepEqual(
    events,
    [1, 2, 1, 2, 1, 0].map((waiters) => ({
      event: "contention",
      lockName: "hot",
      waiters,
    })),
  );
  await lock.release();
  assert.deepEqual(counts.pending, []);
});

Deno.test("a waiter granted with others behind it is told how many wait right after the grant", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using next = await connect({ port });
  await using last = await connect({ port });
  const held = await holder.lock("queue");
  const counts = new Inbox<number>();
  const nextGranted = next.lock("queue", { onContention: counts.push });
  await next.ping();
  const lastGranted = last.lock("queue");
  await last.ping();
  await held.release();
  const lock = await deadline(nextGranted, WAIT_MS, "the grant");
  assert.equal(await counts.next("the waiter count"), 1);
  await lock.release();
  await (await deadline(lastGranted, WAIT_MS, "the last grant")).release();
  assert.deepEqual(counts.pending, []);
});

Deno.test("a holder that did not ask for contention notices gets none", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using raw = await RawClient.connect(port);
  const granted = await raw.request({
    command: "lock",
    parameters: { lockName: "quiet" },
    id: 1,
  });
  assert.equal((granted?.result as { status: string }).status, "ok");
  await using first = await connect({ port });
  await using second = await connect({ port });
  const pending = [first.lock("quiet"), second.lock("quiet")];
  await first.ping();
  await second.ping(); // both queued
  // A notice would have been sent before the reply to this ping.
  assert.deepEqual(await raw.request({ command: "ping", id: 2 }), {
    id: 2,
    result: { status: "ok" },
  });
  await raw.close();
  const lock = await deadline(pending[0]!, WAIT_MS, "the first waiter");
  await lock.release();
  await (await deadline(pending[1]!, WAIT_MS, "the second waiter")).release();
});

Deno.test("run --on-contention SIGUSR1 signals the command when another client starts waiting", async () => {
  await using server = startServer();
  const port = server.addr.port;
  // The loop ends by itself once pklock run is gone, should the test fail.
  const script = 'trap "echo got USR1; exit 0" USR1; echo ready; ' +
    "while kill -0 $PPID 2>/dev/null; do sleep 0.05; done";
  await using run = cli([
    "run",
    "contended",
    "-p",
    String(port),
    "--on-contention",
    "SIGUSR1",
    "--",
    "sh",
    "-c",
    script,
  ]);
  await run.waitFor(/ready\n/);
  await using waiter = await connect({ port });
  const granted = waiter.lock("contended");
  const result = await deadline(run.result(), WAIT_MS, "pklock run's exit");
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /got USR1\n/);
  const lock = await deadline(granted, WAIT_MS, "the grant after run");
  await lock.release();
});

// ---------------------------------------------------------------------------
// The audit log

/** The keys an audit line may have. */
const AUDIT_KEYS = new Set([
  "time",
  "event",
  "lock",
  "mode",
  "token",
  "connectionId",
  "peer",
  "label",
  "code",
]);

Deno.test("the audit log records every grant, release, timeout, refusal and forced release in order", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/audit.jsonl`;
    const audit = await AuditLog.open(path);
    const ids: Record<string, number> = {};
    const tokens: Record<string, number> = {};
    try {
      await using server = startServer({ audit, adminSecret: ADMIN });
      const port = server.addr.port;
      await using a = await connect({ port, label: "worker-a" });
      await using b = await connect({ port, label: "worker-b" });
      await using c = await connect({ port });
      await using operator = await connect({ port, label: "operator" });
      ids.a = a.server.connectionId;
      ids.b = b.server.connectionId;
      ids.c = c.server.connectionId;

      const x1 = await a.lock("audit.x");
      tokens.x1 = x1.token;
      const waiting = b.lock("audit.x");
      await b.ping();
      await x1.release();
      const x2 = await waiting;
      tokens.x2 = x2.token;
      await assert.rejects(
        c.lock("audit.x", { mode: "shared", wait: 30 }),
        LockTimeoutError,
      );
      assert.equal(await c.tryLock("audit.x"), null);
      await assert.rejects(b.lock("audit.x"), remote("already_held"));
      const y = await a.lock("audit.y");
      tokens.y = y.token;
      const controller = new AbortController();
      const blocked = a.lock("audit.x", { signal: controller.signal });
      await a.ping();
      await assert.rejects(b.lock("audit.y"), remote("deadlock"));
      controller.abort(new Error("withdrawn"));
      await assert.rejects(blocked, /withdrawn/);
      const doomed = await connect({ port, label: "doomed" });
      ids.doomed = doomed.server.connectionId;
      tokens.doomed = (await doomed.lock("audit.z")).token;
      const inheriting = a.lock("audit.z");
      await a.ping();
      await doomed.close();
      const z = await deadline(inheriting, WAIT_MS, "audit.z");
      tokens.z = z.token;
      const forced = await operator.forceRelease("audit.x", ADMIN);
      assert.equal(forced.status, "ok");
      await deadline(lost(x2), WAIT_MS, "the forced holder's lost signal");
      await y.release();
      await z.release();
      await server.close();
    } finally {
      await audit.close();
    }

    const text = await Deno.readTextFile(path);
    assert.ok(text.endsWith("\n"));
    const entries = text.slice(0, -1).split("\n").map((line) =>
      JSON.parse(line) as Record<string, unknown>
    );
    let previous = "";
    for (const entry of entries) {
      const line = JSON.stringify(entry);
      for (const key of Object.keys(entry)) {
        assert.ok(AUDIT_KEYS.has(key), `unknown key ${key} in ${line}`);
      }
      const time = entry.time as string;
      assert.equal(new Date(time).toISOString(), time, line);
      assert.ok(time >= previous, `time goes backwards at ${line}`);
      previous = time;
      assert.match(entry.peer as string, /^127\.0\.0\.1:\d+$/, line);
    }
    const A = { connectionId: ids.a, label: "worker-a" };
    const B = { connectionId: ids.b, label: "worker-b" };
    const C = { connectionId: ids.c };
    const D = { connectionId: ids.doomed, label: "doomed" };
    const exclusive = { mode: "exclusive" };
    assert.deepEqual(
      entries.map(({ time: _, peer: __, ...rest }) => rest),
      [
        { event: "grant", lock: "audit.x", token: tokens.x1, ...A },
        { event: "release", lock: "audit.x", token: tokens.x1, ...A },
        { event: "grant", lock: "audit.x", token: tokens.x2, ...B },
        { event: "timeout", lock: "audit.x", ...C, mode: "shared" },
        { event: "refusal", lock: "audit.x", ...C, code: "busy" },
        { event: "refusal", lock: "audit.x", ...B, code: "already_held" },
        { event: "grant", lock: "audit.y", token: tokens.y, ...A },
        { event: "refusal", lock: "audit.y", ...B, code: "deadlock" },
        { event: "withdraw", lock: "audit.x", ...A },
        { event: "grant", lock: "audit.z", token: tokens.doomed, ...D },
        {
          event: "disconnect_release",
          lock: "audit.z",
          token: tokens.doomed,
          ...D,
        },
        { event: "grant", lock: "audit.z", token: tokens.z, ...A },
        { event: "forced_release", lock: "audit.x", token: tokens.x2, ...B },
        { event: "release", lock: "audit.y", token: tokens.y, ...A },
        { event: "release", lock: "audit.z", token: tokens.z, ...A },
      ].map((entry) => ({ ...exclusive, ...entry })),
    );
  });
});

// ---------------------------------------------------------------------------
// Forced release

Deno.test("forceRelease on a server without an admin secret is refused with admin_disabled and the lock stays held", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using operator = await connect({ port });
  const lock = await holder.lock("kept");
  await assert.rejects(
    operator.forceRelease("kept", ADMIN),
    remote("admin_disabled"),
  );
  assert.equal(await operator.tryLock("kept"), null);
  assert.equal(lock.held, true);
  assert.equal(operator.signal.aborted, false);
  await lock.release();
});

Deno.test("forceRelease with a wrong admin secret gets auth_failed, closes that connection and leaves the lock held", async () => {
  await using server = startServer({ adminSecret: ADMIN });
  const port = server.addr.port;
  await using holder = await connect({ port });
  await using operator = await connect({ port });
  await using bystander = await connect({ port });
  const lock = await holder.lock("kept");
  await assert.rejects(
    operator.forceRelease("kept", "not the admin secret"),
    remote("auth_failed"),
  );
  const closed = await deadline(operator.closed, WAIT_MS, "the close");
  assert.equal(closed.reason, "peer_closed");
  assert.equal(await bystander.tryLock("kept"), null);
  assert.equal(lock.held, true);
  await lock.release();
});

Deno.test("forceRelease with the admin secret fires the holder's lost signal and grants the next waiter", async () => {
  await using server = startServer({ adminSecret: ADMIN, metrics: {} });
  const port = server.addr.port;
  await using holder = await connect({ port, label: "vanished host" });
  await using waiter = await connect({ port, label: "next in line" });
  await using operator = await connect({ port });
  const lock = await holder.lock("stuck");
  const next = waiter.lock("stuck");
  await waiter.ping();

  const result = await operator.forceRelease("stuck", ADMIN);
  assert.equal(result.status, "ok");
  assert.equal(result.released?.length, 1);
  const [released] = result.released!;
  assert.equal(released!.connectionId, holder.server.connectionId);
  assert.equal(released!.token, lock.token);
  assert.equal(released!.label, "vanished host");
  assert.equal(released!.mode, "exclusive");

  const reason = await deadline(lost(lock), WAIT_MS, "the lost signal");
  assert.ok(reason instanceof LockLostError, String(reason));
  const granted = await deadline(next, WAIT_MS, "the waiter's grant");
  assert.ok(granted.token > lock.token);
  const status = await operator.status();
  const stuck = status.locks.find((entry) => entry.name === "stuck");
  assert.ok(stuck);
  assert.equal(stuck.holders.length, 1);
  assert.equal(stuck.holders[0]!.connectionId, waiter.server.connectionId);
  assert.equal(stuck.holders[0]!.label, "next in line");
  assert.deepEqual(stuck.waiters, []);

  assert.deepEqual(await operator.forceRelease("free", ADMIN), {
    status: "notFound",
  });
  const metrics = parseExposition(await server.metrics!.render());
  assert.equal(metrics.value("pklock_releases_total", { cause: "force" }), 1);
  await granted.release();
});

Deno.test("a holder forced to release receives the forced_release event, then its connection closes", async () => {
  await using server = startServer({ adminSecret: ADMIN });
  const port = server.addr.port;
  await using raw = await RawClient.connect(port);
  const reply = await raw.request({
    command: "lock",
    parameters: { lockName: "raw-stuck" },
    id: 1,
  });
  const token = (reply?.result as { token: number }).token;
  await using operator = await connect({ port });
  await operator.forceRelease("raw-stuck", ADMIN);
  assert.deepEqual(await deadline(raw.next(), WAIT_MS, "the event"), {
    event: "forced_release",
    lockName: "raw-stuck",
    token,
  });
  assert.equal(await deadline(raw.next(), WAIT_MS, "the close"), null);
});

Deno.test("pklock release --force frees a lock with PKLOCK_ADMIN_SECRET or --admin-secret-file, and exits 2 without --force", async () => {
  await inTempDir(async (dir) => {
    const secretFile = `${dir}/admin-secret`;
    await Deno.writeTextFile(secretFile, `  ${ADMIN}\n`);
    const config = await settingsFile(dir, { admin: { secretFile } });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const args = ["release", "cli-stuck", "--port", String(port)];

    await using first = await connect({ port, label: "vanished host" });
    const firstLock = await first.lock("cli-stuck");
    // Refusals, each of which leaves the lock held.
    const [unforced, wrong, missing] = await Promise.all([
      runCli(args, { PKLOCK_ADMIN_SECRET: ADMIN }),
      runCli([...args, "--force"], {
        PKLOCK_ADMIN_SECRET: "not the admin secret",
      }),
      runCli([...args, "--force"]),
    ]);
    assert.equal(unforced.code, 2, unforced.stderr);
    assert.match(unforced.stderr, /needs --force/);
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /Authentication failed/);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /PKLOCK_ADMIN_SECRET/);
    assert.equal(firstLock.lost.aborted, false);

    const byEnv = await runCli([...args, "--force"], {
      PKLOCK_ADMIN_SECRET: ADMIN,
    });
    assert.equal(byEnv.code, 0, byEnv.stderr);
    assert.match(
      byEnv.stdout,
      new RegExp(
        `Released lock "cli-stuck" \\(token ${firstLock.token}\\): disconnected connection ${first.server.connectionId} from 127\\.0\\.0\\.1:\\d+ \\(vanished host\\)`,
      ),
    );
    await deadline(lost(firstLock), WAIT_MS, "the first holder's loss");

    await using second = await connect({ port });
    const secondLock = await second.lock("cli-stuck");
    const byFile = await runCli([
      ...args,
      "--force",
      "--admin-secret-file",
      secretFile,
    ]);
    assert.equal(byFile.code, 0, byFile.stderr);
    assert.match(byFile.stdout, /Released lock "cli-stuck"/);
    await deadline(lost(secondLock), WAIT_MS, "the second holder's loss");

    const free = await runCli([...args, "--force"], {
      PKLOCK_ADMIN_SECRET: ADMIN,
    });
    assert.equal(free.code, 0, free.stderr);
    assert.match(
      free.stdout,
      /Lock "cli-stuck" is not held; nothing to release/,
    );
  });
});

// ---------------------------------------------------------------------------
// Client labels

Deno.test("status shows the label each client gave for its holds and waits", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await using a = await connect({ port, label: "host-a pid 7" });
  await using b = await connect({ port, label: "b".repeat(256) });
  await using c = await connect({ port });
  const lock = await a.lock("labelled");
  const pending = [b.lock("labelled"), c.lock("labelled")];
  await b.ping();
  await c.ping();
  const status = await c.status();
  const entry = status.locks.find((item) => item.name === "labelled");
  assert.ok(entry);
  const { holders, waiters } = entry as StatusLock;
  assert.equal(holders[0]!.label, "host-a pid 7");
  assert.equal(waiters[0]!.label, "b".repeat(256));
  assert.equal("label" in waiters[1]!, false);
  await lock.release();
  for (const granted of pending) {
    await (await deadline(granted, WAIT_MS, "a waiter's grant")).release();
  }
});

Deno.test("hello refuses a label that is not a string of at most 256 characters", async () => {
  await using server = startServer();
  const port = server.addr.port;
  await assert.rejects(
    connect({ port, label: "x".repeat(257) }),
    remote("invalid_parameters"),
  );
  await using raw = await RawClient.connect(port);
  const reply = await raw.request({
    command: "hello",
    parameters: { client: 7 },
    id: 1,
  });
  assert.equal(reply?.id, 1);
  assert.equal(errorCode(reply), "invalid_parameters");
  assert.match(
    (reply?.error as { message: string }).message,
    /"client" must be a string of at most 256 characters/,
  );
});

// ---------------------------------------------------------------------------
// JSON logs

const LEVELS = new Set(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]);

Deno.test("serve with log format json writes every stderr line as one JSON object", async () => {
  await inTempDir(async (dir) => {
    const config = await settingsFile(dir, {
      log: { level: "debug", format: "json" },
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    {
      await using client = await connect({ port, label: "json test" });
      await (await client.lock("json-logged")).release();
    }
    await server.waitFor(/peer_closed/, "stderr");
    server.kill("SIGTERM");
    const result = await deadline(server.result(), WAIT_MS, "the server exit");
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stderr.endsWith("\n"), result.stderr);
    const records = result.stderr.slice(0, -1).split("\n").map((line) => {
      const record = JSON.parse(line) as Record<string, unknown>;
      const timestamp = record["@timestamp"] as string;
      assert.equal(new Date(timestamp).toISOString(), timestamp, line);
      assert.ok(LEVELS.has(record.level as string), line);
      assert.match(record.logger as string, /^pklock(\.|$)/, line);
      assert.equal(typeof record.message, "string", line);
      assert.equal(typeof record.properties, "object", line);
      return record;
    });
    const find = (message: RegExp) =>
      records.find((record) => message.test(record.message as string));
    const granted = find(/^Granted "json-logged" to connection \d+/);
    assert.equal(granted?.level, "DEBUG");
    assert.equal(granted?.logger, "pklock.server");
    assert.equal(
      (granted?.properties as { name: string }).name,
      "json-logged",
    );
    assert.equal(find(/^Connection \d+ opened from/)?.level, "DEBUG");
    assert.equal(
      find(/^Connection \d+ released "json-logged"/)?.level,
      "DEBUG",
    );
    const stopping = find(/^Received "SIGTERM"/);
    assert.equal(stopping?.level, "INFO");
    assert.deepEqual(stopping?.properties, { signal: "SIGTERM" });
  });
});

Deno.test("a forced release tells the holder why it lost the lock", async () => {
  await using server = startServer({ adminSecret: ADMIN });
  await using holder = await connect({ port: server.addr.port });
  await using operator = await connect({ port: server.addr.port });
  const lock = await holder.lock("why");
  const lost = new Promise((resolve) =>
    lock.lost.addEventListener("abort", resolve, { once: true })
  );
  await operator.forceRelease("why", ADMIN);
  await deadline(lost, WAIT_MS, "the lost signal");
  assert.ok(lock.lost.reason instanceof LockLostError);
  assert.match(
    (lock.lost.reason as Error).message,
    /^Lost lock "why": an operator forced its release$/,
  );
});

Deno.test("forcing the release of a lock the connection holds itself is refused", async () => {
  await using server = startServer({ adminSecret: ADMIN });
  await using client = await connect({ port: server.addr.port });
  const lock = await client.lock("mine");
  await assert.rejects(
    client.forceRelease("mine", ADMIN),
    (error: Error & { code?: string }) =>
      error.code === "invalid_parameters" &&
      /release it with "release"/.test(error.message),
  );
  assert.equal(lock.held, true);
  await client.ping();
  await lock.release();
});

Deno.test("serve ignores SIGHUP, says so, and keeps its locks", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using holder = await connect({ port });
  const lock = await holder.lock("hangup");
  server.kill("SIGHUP");
  await server.waitFor(/Received SIGHUP: ignored/, "stderr");
  await holder.ping();
  assert.equal(lock.held, true);
  await lock.release();
});

Deno.test("serve refuses a metrics port in use before saying it listens", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dir = await Deno.makeTempDir({ prefix: "pklock-test-" });
  try {
    const path = `${dir}/settings.jsonc`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        port: 0,
        stateFile: `${dir}/state.json`,
        metrics: { port: taken.addr.port },
      }),
    );
    const result = await runCli(["serve", "--config", path]);
    assert.equal(result.code, 5);
    assert.match(result.stderr, /Cannot serve metrics on 127\.0\.0\.1:\d+/);
    assert.doesNotMatch(result.stdout, /listening on/);
  } finally {
    taken.close();
    await Deno.remove(dir, { recursive: true });
  }
});
