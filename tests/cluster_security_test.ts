/**
 * Cluster nodes on an etcd that authenticates its clients: by user and
 * password (tokens that expire), and by client certificate over https with a
 * private CA.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { makeCertificates } from "./certificates.ts";
import { startNode } from "./cluster_nodes.ts";
import { etcdTest, startEtcdCluster } from "./etcd_cluster.ts";
import { DenoProcess, inTempDir, MAIN, settingsFile } from "./helpers.ts";

const PASSWORD = "correct horse battery staple";

/** Runs `pklock serve` on etcd with `cluster` settings until it exits. */
async function serveUntilExit(
  dir: string,
  cluster: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<{ code: number; stderr: string }> {
  const config = await settingsFile(dir, {
    cluster: { ttl: 2, margin: 500, ...cluster },
  });
  const process = new DenoProcess(
    MAIN,
    ["serve", "--port", "0", "-c", config],
    env,
  );
  return await process.result();
}

etcdTest(
  "a node on an etcd with auth serves locks, and authenticates again when its token expires, keeping its locks",
  async () => {
    // JWTs expire 2 s after they are issued, however often they are used.
    await using etcd = await startEtcdCluster({
      members: 1,
      authPassword: PASSWORD,
      jwtTtlSeconds: 2,
    });
    await inTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/etcd-password`, `${PASSWORD}\n`);
      await using node = await startNode(etcd.endpoints, {
        cluster: {
          auth: { user: "pklock", passwordFile: `${dir}/etcd-password` },
        },
      });
      await node.process.waitFor(
        /Authenticated with etcd as user "?pklock/,
        "stderr",
      );
      await using client = await connect({ port: node.port });
      const held = await client.lock("guarded");
      // The node reads etcd every second: the first read after the expiry
      // is refused, and it authenticates again.
      await node.process.waitFor(
        /Authenticated with etcd as user "?pklock/,
        "stderr",
      );
      const after = await client.lock("after-expiry");
      assert.ok(after.token > held.token);
      assert.equal(held.lost.aborted, false, "the held lock was lost");
      await after.release();
      await held.release();
    });
  },
);

etcdTest(
  "a wrong etcd password, or none, stops the node at start-up with a clear error and exit code 5",
  async () => {
    await using etcd = await startEtcdCluster({
      members: 1,
      authPassword: PASSWORD,
    });
    await inTempDir(async (dir) => {
      const wrong = await serveUntilExit(
        dir,
        { endpoints: etcd.endpoints, auth: { user: "pklock" } },
        { PKLOCK_ETCD_PASSWORD: "not the password" },
      );
      assert.equal(wrong.code, 5, wrong.stderr);
      assert.match(
        wrong.stderr,
        /Cannot join the cluster on etcd http:\/\/127\.0\.0\.1:\d+: .*authentication failed, invalid user ID or password/,
      );
      const none = await serveUntilExit(dir, {
        endpoints: etcd.endpoints,
        auth: { user: "pklock" },
      }, { PKLOCK_ETCD_PASSWORD: "" });
      assert.equal(none.code, 5, none.stderr);
      assert.match(
        none.stderr,
        /No etcd password for user "pklock": set "cluster\.auth\.passwordFile" or PKLOCK_ETCD_PASSWORD/,
      );
      const anonymous = await serveUntilExit(dir, {
        endpoints: etcd.endpoints,
      });
      assert.equal(anonymous.code, 5, anonymous.stderr);
      assert.match(anonymous.stderr, /user name is empty/);
    });
  },
);

etcdTest(
  "over https with client certificates, a node with its certificate and the private CA serves locks; one without the certificate is refused clearly",
  async () => {
    await using certs = await makeCertificates();
    await using etcd = await startEtcdCluster({ members: 1, tls: certs });
    await using node = await startNode(etcd.endpoints, {
      cluster: {
        tls: {
          caFile: certs.caFile,
          certFile: certs.clientCertFile,
          keyFile: certs.clientKeyFile,
        },
      },
    });
    await using client = await connect({ port: node.port });
    const lock = await client.lock("over-tls");
    await lock.release();

    await inTempDir(async (dir) => {
      const started = performance.now();
      const refused = await serveUntilExit(dir, {
        endpoints: etcd.endpoints,
        tls: { caFile: certs.caFile },
      });
      console.log(
        `without a client certificate, exit ${refused.code} after ${
          Math.round(performance.now() - started)
        } ms: ${refused.stderr.trim()}`,
      );
      assert.equal(refused.code, 5, refused.stderr);
      assert.match(
        refused.stderr,
        /Cannot join the cluster on etcd https:.*no endpoint answered.*client certificate/s,
      );
      const untrusted = await serveUntilExit(dir, {
        endpoints: etcd.endpoints,
      });
      assert.equal(untrusted.code, 5, untrusted.stderr);
      assert.match(untrusted.stderr, /https:.*(certificate|UnknownIssuer)/s);
      await Deno.writeTextFile(`${dir}/not-a-ca.pem`, "not a certificate\n");
      const garbled = await serveUntilExit(dir, {
        endpoints: etcd.endpoints,
        tls: { caFile: `${dir}/not-a-ca.pem` },
      });
      assert.equal(garbled.code, 5, garbled.stderr);
      assert.match(
        garbled.stderr,
        /The "cluster\.tls\.caFile" file ".*not-a-ca\.pem" holds nothing in PEM/,
      );
    });
    const again = await client.lock("over-tls");
    await again.release();
  },
);
