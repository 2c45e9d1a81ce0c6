// TLS, with a throw-away CA made by openssl: a client that trusts the CA
// locks and releases; one that does not, or speaks plain TCP, is refused and
// harms no one; a silent peer does not hold up shutdown.
import assert from "node:assert/strict";
import { connect, ConnectionError } from "../mod.ts";
import { encodeFrame } from "../protocol/frame.ts";
import { assertSoleHolder } from "./assertions.ts";
import {
  deadline,
  RawClient,
  runCli,
  settingsFile,
  spawnServer,
  startServer,
} from "./helpers.ts";
import { makeCertificates, OPENSSL } from "./certificates.ts";

if (OPENSSL === null) {
  console.log(
    "tls_test.ts: skipping the TLS tests: `openssl version` failed, so no test certificates can be made",
  );
}

Deno.test({
  name: "over TLS, a client that trusts the CA locks and releases",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
    });
    const port = server.addr.port;
    const tls = { caCerts: [certs.ca] };
    await using a = await connect({ port, tls });
    await using b = await connect({ port, tls });
    const lock = await a.lock("over-tls");
    assert.equal(await b.tryLock("over-tls"), null);
    const next = b.lock("over-tls");
    await lock.release();
    await (await deadline(next, 5000, "the grant over TLS")).release();
  },
});

Deno.test({
  name:
    "over TLS, a client that does not trust the certificate is refused with ConnectionError",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
    });
    const port = server.addr.port;
    await using holder = await connect({ port, tls: { caCerts: [certs.ca] } });
    const lock = await holder.lock("kept");
    // tls: true trusts the system's roots only, which did not sign this.
    await assert.rejects(connect({ port, tls: true }), ConnectionError);
    assert.equal(lock.lost.aborted, false);
    await using other = await connect({ port, tls: { caCerts: [certs.ca] } });
    await assertSoleHolder(holder, other, "kept");
  },
});

Deno.test({
  name:
    "a plain-TCP client of a TLS server gets nothing usable and harms no one",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
    });
    const port = server.addr.port;
    const tls = { caCerts: [certs.ca] };
    await using holder = await connect({ port, tls });
    const lock = await holder.lock("kept");
    // The raw client's frame decoder makes nothing of a TLS alert either.
    await using plain = await RawClient.connect(port);
    await plain.write(
      encodeFrame({ command: "lock", parameters: { lockName: "kept" }, id: 1 }),
    );
    assert.equal(await deadline(plain.next(), 5000, "the close"), null);
    await plain.ended();
    // The library over plain TCP: the connection is lost before any reply.
    await assert.rejects(connect({ port }), ConnectionError);
    assert.equal(lock.lost.aborted, false);
    await using other = await connect({ port, tls });
    await assertSoleHolder(holder, other, "kept");
  },
});

Deno.test({
  name:
    "serve with tls.certFile and tls.keyFile works end to end with try-lock --ca-file",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    const config = await settingsFile(certs.dir, {
      tls: { certFile: certs.certFile, keyFile: certs.keyFile },
    });
    const { process: server, port } = await spawnServer(["--config", config]);
    await using _server = server;
    const args = ["try-lock", "cli-tls", "--port", String(port), "--hold", "0"];
    const ok = await runCli([...args, "--ca-file", certs.caFile]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Got lock "cli-tls" \(token \d+\)/);
    assert.match(ok.stdout, /Released lock "cli-tls"/);
    // Without the CA the certificate is not trusted; without TLS the server
    // understands nothing. Either way: exit code 4, not a hang.
    for (const extra of [["--tls"], []]) {
      const refused = await runCli([...args, ...extra]);
      assert.equal(refused.code, 4, `${extra}: ${refused.stderr}`);
    }
  },
});

Deno.test({
  name:
    "under TLS, a silent peer refused for a connection limit does not hold up shutdown",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    const server = startServer({
      tls: { cert: certs.cert, key: certs.key },
      maxConnections: 1,
      metrics: {},
    });
    const port = server.addr.port;
    await using holder = await connect({ port, tls: { caCerts: [certs.ca] } });
    const lock = await holder.lock("tls-limit");
    // A peer that never does the TLS handshake, beyond the limit.
    await using _silent = await RawClient.connect(port);
    const refused = async () => {
      while (
        !(await server.metrics!.render()).includes(
          'pklock_connections_rejected_total{cause="limit"} 1',
        )
      ) await holder.ping();
    };
    await deadline(refused(), 5000, "the refusal");
    assert.equal(server.status().connections.current, 1);
    assert.equal(lock.held, true);
    // Deno closes a TLS socket that never handshook only lazily, so the
    // peer may not see the close yet; what matters is that shutdown does not
    // wait for it.
    await deadline(server.close(), 5000, "the server to close");
  },
});

Deno.test({
  name:
    "under TLS, a peer that never finishes its handshake is closed after handshakeTimeout",
  ignore: OPENSSL === null,
  fn: async () => {
    await using certs = await makeCertificates();
    await using server = startServer({
      tls: { cert: certs.cert, key: certs.key },
      handshakeTimeout: 200,
    });
    const port = server.addr.port;
    await using holder = await connect({ port, tls: { caCerts: [certs.ca] } });
    const lock = await holder.lock("tls-handshake");
    await using _silent = await RawClient.connect(port);
    const connections = async (count: number) => {
      while ((await holder.status()).connections.current !== count) {
        await holder.ping();
      }
    };
    await deadline(connections(2), 5000, "the silent peer to be accepted");
    await deadline(connections(1), 5000, "the silent peer to be closed");
    assert.equal(lock.held, true);
    await lock.release();
  },
});
