// Fleet defaults from the environment, labels, and errors that name the flag
// that fixes them: real CLI processes against real servers (TLS ones made
// with openssl, skipped where it cannot be run).
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { cli, runCli, spawnServer } from "./helpers.ts";
import { makeCertificates, OPENSSL } from "./certificates.ts";

async function tempDir(): Promise<string & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-conn-" });
  return Object.assign(new String(dir) as string & AsyncDisposable, {
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  });
}

Deno.test("PKLOCK_HOST, PKLOCK_PORT and PKLOCK_LABEL are the flags' defaults", async () => {
  const { process: server, port } = await spawnServer();
  await using _server = server;
  await using client = await connect({ port });
  const env = {
    PKLOCK_HOST: "127.0.0.1",
    PKLOCK_PORT: String(port),
    PKLOCK_LABEL: "fleet job",
  };
  await using runner = cli(
    [
      "run",
      "fleet",
      "--",
      "sh",
      "-c",
      "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
    ],
    env,
  );
  await runner.waitFor(/ready\n/);
  const status = await runCli(["status"], env);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /held by connection \d+ from .* \(fleet job\)/);
  // A flag beats the environment.
  const flagged = await runCli(["status", "-p", "1"], env);
  assert.equal(flagged.code, 4);
  runner.kill("SIGTERM");
  await runner.result();
  assert.ok(await client.tryLock("fleet"));
});

Deno.test("a server that wants a secret says which flag gives it", async () => {
  await using dir = await tempDir();
  const secret = `${dir}/secret`;
  await Deno.writeTextFile(secret, "0123456789abcdef0123\n");
  const wrong = `${dir}/wrong`;
  await Deno.writeTextFile(wrong, "wrong-wrong-wrong-wrong\n");
  const settings = `${dir}/settings.jsonc`;
  await Deno.writeTextFile(
    settings,
    `{ "auth": { "secretFile": "${secret}" } }`,
  );
  const { process: server, port } = await spawnServer(["--config", settings]);
  await using _server = server;
  const p = String(port);
  const none = await runCli(["status", "-p", p]);
  assert.equal(none.code, 4);
  assert.match(
    none.stderr,
    /^pklock: The server at 127\.0\.0\.1:\d+ requires authentication: give its shared secret with --secret-file FILE or PKLOCK_SECRET\n$/,
  );
  const refused = await runCli(["status", "-p", p, "--secret-file", wrong]);
  assert.equal(refused.code, 4);
  assert.match(
    refused.stderr,
    /^pklock: Authentication failed at 127\.0\.0\.1:\d+: the server refused the shared secret \(check the file given with --secret-file, or PKLOCK_SECRET\)\n$/,
  );
  const fromEnv = await runCli(["status", "-p", p], {
    PKLOCK_SECRET_FILE: secret,
  });
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
});

Deno.test({
  name: "TLS mistakes get hints, not TLS library text",
  ignore: OPENSSL === null,
}, async (t) => {
  await using certs = await makeCertificates();
  const dir = certs.dir;
  const settings = `${dir}/settings.jsonc`;
  await Deno.writeTextFile(
    settings,
    `{ "tls": { "certFile": "${certs.certFile}", "keyFile": "${certs.keyFile}" } }`,
  );
  const tls = await spawnServer(["--config", settings]);
  await using _tls = tls.process;
  const plain = await spawnServer();
  await using _plain = plain.process;
  await t.step("plain TCP to a TLS server: try --tls", async () => {
    const result = await runCli(["status", "-p", String(tls.port)]);
    assert.equal(result.code, 4);
    assert.match(result.stderr, /is the server using TLS\? try --tls\)\n$/);
  });
  await t.step("an untrusted certificate: --ca-file", async () => {
    const result = await runCli(["status", "--tls", "-p", String(tls.port)]);
    assert.equal(result.code, 4);
    assert.match(
      result.stderr,
      /over TLS: its certificate is not signed by a CA this client trusts \(name the CA with --ca-file or PKLOCK_CA_FILE\)\n$/,
    );
    assert.doesNotMatch(result.stderr, /UnknownIssuer|invalid peer/);
  });
  await t.step("TLS to a plain server: try without --tls", async () => {
    const result = await runCli(["status", "--tls", "-p", String(plain.port)]);
    assert.equal(result.code, 4);
    assert.match(result.stderr, /the server does not speak TLS/);
    assert.doesNotMatch(result.stderr, /InvalidContentType|corrupt/);
  });
  await t.step("PKLOCK_TLS=1 is --tls, PKLOCK_TLS=0 is not", async () => {
    const on = await runCli(["status", "-p", String(tls.port)], {
      PKLOCK_TLS: "1",
    });
    assert.equal(on.code, 4);
    assert.match(on.stderr, /over TLS: its certificate is not signed/);
    const off = await runCli(["status", "-p", String(tls.port)], {
      PKLOCK_TLS: "0",
    });
    assert.match(off.stderr, /try --tls\)\n$/);
  });
  await t.step("the CA from PKLOCK_CA_FILE: connected", async () => {
    const result = await runCli(["status", "-p", String(tls.port)], {
      PKLOCK_CA_FILE: `${dir}/ca.pem`,
    });
    assert.equal(result.code, 0, result.stderr);
  });
});
