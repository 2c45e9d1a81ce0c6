import assert from "node:assert/strict";
import { createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type HandlerContext,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Auth, Lease } from "./proto/rpc_pb.ts";
import { delay } from "../message/io.ts";
import { EtcdClient } from "./etcd.ts";
import { EtcdTokens } from "./etcd_auth.ts";
import {
  EtcdAuthError,
  EtcdError,
  EtcdUnavailableError,
} from "./etcd_errors.ts";
import { watch } from "./etcd_watch.ts";
import { NodeLease } from "./node_lease.ts";
import { makeCertificates } from "../tests/certificates.ts";
import { etcdTest, startEtcdCluster } from "../tests/etcd_cluster.ts";

const PASSWORD = "correct horse battery staple";

const pure = { permissions: "none" } as const;

/** An authenticate call that answers token `t<n>` when released. */
function issuer() {
  const asked: PromiseWithResolvers<void>[] = [];
  let issued = 0;
  return {
    asked,
    authenticate: () => {
      const answer = Promise.withResolvers<void>();
      asked.push(answer);
      return answer.promise.then(() => ({ token: `t${++issued}` }));
    },
  };
}

Deno.test(
  "callers asking at once share one authentication; a refused token is fetched again once",
  pure,
  async () => {
    const etcd = issuer();
    const tokens = new EtcdTokens(
      { user: "pklock", password: "pw" },
      etcd.authenticate,
    );
    const both = Promise.all([tokens.get(), tokens.get()]);
    assert.equal(etcd.asked.length, 1);
    etcd.asked[0]!.resolve();
    assert.deepEqual(await both, ["t1", "t1"]);
    assert.equal(await tokens.get(), "t1");
    tokens.refused("t1");
    tokens.refused("t1");
    const next = tokens.get();
    etcd.asked[1]!.resolve();
    assert.equal(await next, "t2");
    // A refusal of the old token, arriving late, keeps the new one.
    tokens.refused("t1");
    assert.equal(await tokens.get(), "t2");
    assert.equal(etcd.asked.length, 2);
    assert.equal(tokens.authentications, 2);
  },
);

Deno.test(
  "a failed authentication is not kept, and a caller's signal ends only its own wait",
  pure,
  async () => {
    let calls = 0;
    const tokens = new EtcdTokens({ user: "u", password: "p" }, () => {
      calls++;
      return Promise.reject(new EtcdAuthError("wrong password", 3));
    });
    await assert.rejects(tokens.get(), EtcdAuthError);
    await assert.rejects(tokens.get(), EtcdAuthError);
    assert.equal(calls, 2);

    const etcd = issuer();
    const slow = new EtcdTokens(
      { user: "u", password: "p" },
      etcd.authenticate,
    );
    const impatient = new AbortController();
    const first = slow.get(impatient.signal);
    const second = slow.get();
    impatient.abort(new Error("gave up"));
    await assert.rejects(first, /gave up/);
    etcd.asked[0]!.resolve();
    assert.equal(await second, "t1");
  },
);

etcdTest(
  "a client authenticates once, and again after etcd dropped its simple token",
  async () => {
    await using cluster = await startEtcdCluster({
      members: 1,
      authPassword: PASSWORD,
      flags: ["--auth-token-ttl=1"],
    });
    const etcd = new EtcdClient(cluster.endpoints, {
      credentials: { user: "pklock", password: PASSWORD },
    });
    await etcd.put({ key: "/pklock/t/a", value: "1" });
    await etcd.put({ key: "/pklock/t/b", value: "2" });
    assert.equal(etcd.authentications, 1);
    // etcd forgets an unused simple token after --auth-token-ttl, checked
    // once a second: nothing tells a client, so the test waits it out.
    await delay(2_500);
    const { kvs } = await etcd.range({ key: "/pklock/t/", prefix: true });
    assert.deepEqual(kvs.map((kv) => kv.value), ["1", "2"]);
    assert.equal(etcd.authentications, 2);
  },
);

etcdTest(
  "a watch refused for an expired token starts again with a new one",
  async () => {
    await using cluster = await startEtcdCluster({
      members: 1,
      authPassword: PASSWORD,
      jwtTtlSeconds: 1,
    });
    const etcd = new EtcdClient(cluster.endpoints, {
      credentials: { user: "pklock", password: PASSWORD },
    });
    const revision = await etcd.put({ key: "/pklock/w/a", value: "1" });
    assert.equal(etcd.authentications, 1);
    // A JWT expires a fixed time after it was issued, used or not.
    await delay(1_500);
    const controller = new AbortController();
    const batches = watch(etcd, { key: "/pklock/w/", prefix: true }, {
      startRevision: revision,
      signal: controller.signal,
    });
    const first = await batches.next();
    assert.equal(first.done, false);
    assert.deepEqual(first.value!.events.map((e) => e.kv.key), ["/pklock/w/a"]);
    assert.equal(etcd.authentications, 2);
    controller.abort();
    await batches.return();
  },
);

etcdTest(
  "a wrong password, and no credentials, are refused at once with EtcdAuthError",
  async () => {
    await using cluster = await startEtcdCluster({
      members: 1,
      authPassword: PASSWORD,
    });
    const wrong = new EtcdClient(cluster.endpoints, {
      credentials: { user: "pklock", password: "not it" },
    });
    const started = performance.now();
    await assert.rejects(wrong.leaseGrant(10), (error) => {
      assert.ok(error instanceof EtcdAuthError, String(error));
      assert.match(error.message, /invalid user ID or password/);
      return true;
    });
    assert.ok(performance.now() - started < 2_000, "it was retried");
    const none = new EtcdClient(cluster.endpoints);
    await assert.rejects(none.range({ key: "/pklock/" }), EtcdAuthError);
    const outside = new EtcdClient(cluster.endpoints, {
      credentials: { user: "pklock", password: PASSWORD },
    });
    await assert.rejects(
      outside.put({ key: "/other", value: "x" }),
      (error) => {
        assert.ok(error instanceof EtcdError);
        assert.match(error.message, /permission denied/);
        return true;
      },
    );
  },
);

etcdTest(
  "over https, a client with the private CA and a client certificate reads, writes and watches; one without the certificate is refused",
  async () => {
    await using certs = await makeCertificates();
    await using cluster = await startEtcdCluster({ members: 1, tls: certs });
    assert.ok(cluster.endpoints[0]!.startsWith("https://"));
    using etcd = new EtcdClient(cluster.endpoints, {
      tls: {
        caCerts: [certs.ca],
        cert: await Deno.readTextFile(certs.clientCertFile),
        key: await Deno.readTextFile(certs.clientKeyFile),
      },
    });
    const revision = await etcd.put({ key: "/t/a", value: "1" });
    assert.equal((await etcd.range({ key: "/t/a" })).kvs[0]!.value, "1");
    const controller = new AbortController();
    const batches = watch(etcd, { key: "/t/", prefix: true }, {
      startRevision: revision,
      signal: controller.signal,
    });
    const first = await batches.next();
    assert.deepEqual(first.value!.events.map((e) => e.kv.key), ["/t/a"]);
    controller.abort();
    await batches.return();

    using anonymous = new EtcdClient(cluster.endpoints, {
      retryForMs: 300,
      tls: { caCerts: [certs.ca] },
    });
    await assert.rejects(anonymous.range({ key: "/t/a" }), (error) => {
      assert.ok(error instanceof EtcdUnavailableError, String(error));
      console.log(`without a client certificate: ${error.message}`);
      return true;
    });
    assert.throws(
      () => new EtcdClient(cluster.endpoints, { tls: { cert: certs.cert } }),
      /both its certificate and its key/,
    );
  },
);

/**
 * A stand-in for an etcd that checks tokens on keep-alives (etcd 3.4 does
 * not): a gRPC server over HTTP/2 that ends a stale token's keep-alive stream
 * with UNAUTHENTICATED, and drops the current token after each renewal.
 */
async function strictEtcd() {
  let issued = 0;
  let valid = "";
  const renewals: number[] = [];
  const check = (context: HandlerContext) => {
    if (context.requestHeader.get("token") !== valid) {
      throw new ConnectError(
        "etcdserver: invalid auth token",
        Code.Unauthenticated,
      );
    }
  };
  const routes = (router: ConnectRouter) => {
    router.service(Auth, {
      authenticate: () => {
        valid = `token-${++issued}`;
        return { token: valid };
      },
    });
    router.service(Lease, {
      leaseGrant: (_, context) => {
        check(context);
        return { ID: 7n, TTL: 2n };
      },
      async *leaseKeepAlive(requests, context) {
        check(context);
        for await (const _ of requests) {
          renewals.push(issued);
          valid = "";
          yield { ID: 7n, TTL: 2n };
        }
      },
    });
  };
  const server = createServer(connectNodeAdapter({ routes }));
  const listening = Promise.withResolvers<void>();
  server.listen(0, "127.0.0.1", () => listening.resolve());
  await listening.promise;
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    renewals,
    [Symbol.asyncDispose]: () =>
      new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

Deno.test(
  "a keep-alive refused for an expired token authenticates again within its bound and renews: never a lost lease",
  async () => {
    await using gateway = await strictEtcd();
    using etcd = new EtcdClient([gateway.endpoint], {
      credentials: { user: "pklock", password: PASSWORD },
    });
    await using lease = await NodeLease.grant(etcd, {
      ttlSeconds: 2,
      marginMs: 500,
    });
    // After the first, each renewal needs a new token: the stale one is
    // refused first, ending its stream.
    // Bounded: the lease's deadline fires `lost` within 1.5 s of silence.
    const lost = new Promise<never>((_, reject) =>
      lease.lost.addEventListener("abort", () => reject(lease.lost.reason), {
        once: true,
      })
    );
    lost.catch(() => {});
    for (let i = 0; i < 3; i++) await Promise.race([lease.renewed(), lost]);
    assert.equal(lease.lost.aborted, false);
    assert.deepEqual(gateway.renewals, [1, 2, 3]);
    assert.equal(etcd.authentications, 3);
  },
);
