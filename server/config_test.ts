import assert from "node:assert/strict";
import {
  defaultSettings,
  loadSettings,
  parseSettings,
  SettingsError,
} from "./config.ts";

const EXAMPLE = new URL("../settings.example.jsonc", import.meta.url).pathname;

Deno.test("settings.example.jsonc parses and states exactly the embedded defaults", async () => {
  assert.deepEqual(await loadSettings(EXAMPLE), defaultSettings());
});

Deno.test("settings.example.jsonc names every settings key", async () => {
  const text = await Deno.readTextFile(EXAMPLE);
  const keys = (value: object, prefix = ""): string[] =>
    Object.entries(value).flatMap(([key, inner]) =>
      typeof inner === "object" && inner !== null && !Array.isArray(inner)
        ? keys(inner, `${prefix}${key}.`)
        : [`${prefix}${key}`]
    );
  for (const key of keys(defaultSettings())) {
    const last = key.split(".").at(-1)!;
    assert.ok(text.includes(`"${last}":`), `"${key}" is not documented`);
  }
});

Deno.test("an empty settings object means the embedded defaults", () => {
  assert.deepEqual(parseSettings("{}", "empty.jsonc"), defaultSettings());
});

Deno.test("command-line overrides win over the file", async () => {
  const settings = await loadSettings(EXAMPLE, {
    host: "::1",
    port: 0,
    logLevel: "debug",
  });
  assert.equal(settings.host, "::1");
  assert.equal(settings.port, 0);
  assert.equal(settings.log.level, "debug");
});

Deno.test("every problem in a settings file is reported with its place", () => {
  assert.throws(
    () =>
      parseSettings(
        '{\n  "port": -1,\n  "limits": { "maxFrameBytes": "big" }\n}',
        "two.jsonc",
      ),
    (error: Error) =>
      error instanceof SettingsError &&
      /^Invalid settings file "two\.jsonc": line 2, column 11: "port" too small: expected number to be >=0; line 3, column 32: "limits\.maxFrameBytes" expected number, received string$/
        .test(error.message),
  );
});

Deno.test("the commented-out examples in settings.example.jsonc are valid settings", async () => {
  const text = await Deno.readTextFile(EXAMPLE);
  const examples = [...text.matchAll(/^ {2}\/\/ ("\w+": .*?),?$/gm)]
    .map((match) => match[1]!);
  assert.deepEqual(
    examples.map((example) => example.slice(1, example.indexOf('"', 1))),
    [
      "auth",
      "tls",
      "heartbeat",
      "admin",
      "metrics",
      "alarms",
      "audit",
      "cluster",
      "cluster",
    ],
  );
  for (const example of examples) {
    parseSettings(`{ ${example} }`, "example");
  }
});

Deno.test("--etcd turns cluster mode on, with the file's other cluster settings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/settings.jsonc`;
    await Deno.writeTextFile(
      path,
      '{ "cluster": { "endpoints": ["http://a:1"], "ttl": 2, "margin": 500 } }',
    );
    const settings = await loadSettings(path, {
      etcd: ["http://127.0.0.1:2379", "http://127.0.0.1:22379"],
    });
    assert.deepEqual(settings.cluster, {
      endpoints: ["http://127.0.0.1:2379", "http://127.0.0.1:22379"],
      prefix: "/pklock/v1",
      ttl: 2,
      margin: 500,
      progressTimeout: 5000,
    });
    assert.equal(defaultSettings().cluster, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad cluster settings are refused with the reason", async () => {
  await assert.rejects(
    loadSettings(undefined, { etcd: ["ftp://x"] }),
    (error: Error) =>
      error instanceof SettingsError &&
      error.message.startsWith('Invalid --etcd "ftp://x": '),
  );
  assert.throws(
    () =>
      parseSettings(
        '{ "cluster": { "endpoints": ["http://a:1"], "ttl": 2, "margin": 1000 } }',
        "margin.jsonc",
      ),
    /"cluster" "margin" \(ms\) must be below half of "ttl" \(s\)/,
  );
});

Deno.test("etcd's auth and TLS settings are refused when incomplete, or TLS without https", () => {
  const cluster = (more: string, endpoint = "https://a:1") =>
    parseSettings(
      `{ "cluster": { "endpoints": ["${endpoint}"], ${more} } }`,
      "etcd.jsonc",
    );
  assert.deepEqual(
    cluster('"auth": { "user": "pklock" }, "tls": { "caFile": "ca.pem" }')
      .cluster?.auth,
    { user: "pklock" },
  );
  assert.throws(
    () => cluster('"auth": { "user": "pklock", "password": "inline" }'),
    /unknown key "cluster\.auth\.password"/,
  );
  assert.throws(
    () => cluster('"auth": { "passwordFile": "pw" }'),
    /"cluster\.auth\.user" expected string/,
  );
  assert.throws(
    () => cluster('"tls": { "certFile": "node.pem" }'),
    /"cluster\.tls" give both "certFile" and "keyFile", or neither/,
  );
  assert.throws(
    () => cluster('"tls": { "caFile": "ca.pem" }', "http://a:1"),
    /"cluster" "tls" needs https:\/\/ endpoints/,
  );
});
