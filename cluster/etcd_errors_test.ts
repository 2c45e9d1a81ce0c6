import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EtcdAuthError,
  EtcdError,
  etcdError,
  EtcdNoSpaceError,
  UNAUTHENTICATED,
  watchCancelled,
} from "./etcd_errors.ts";
import { reasonOf } from "./etcd_grpc.ts";

const pure = { permissions: "none" } as const;

Deno.test("etcdError() types a call's status by its code", pure, () => {
  const stale = etcdError(
    "KV.Range",
    new ConnectError("etcdserver: invalid auth token", Code.Unauthenticated),
  );
  assert.equal(stale.code, UNAUTHENTICATED);
  assert.equal(
    stale.message,
    'Cannot call etcd "KV.Range": etcdserver: invalid auth token',
  );
  assert.ok(stale.cause instanceof ConnectError);
  const wrong = etcdError(
    "Auth.Authenticate",
    new ConnectError(
      "etcdserver: authentication failed, invalid user ID or password",
      Code.InvalidArgument,
    ),
  );
  assert.ok(wrong instanceof EtcdAuthError);
  assert.ok(
    etcdError(
      "KV.Put",
      new ConnectError("etcdserver: user name is empty", Code.InvalidArgument),
    ) instanceof EtcdAuthError,
  );
  const other = etcdError(
    "KV.Put",
    new ConnectError("etcdserver: key is not provided", Code.InvalidArgument),
  );
  assert.equal(other.name, "EtcdError");
  assert.equal(other.code, 3);
  const refused = etcdError("KV.Put", new TypeError("connection refused"));
  assert.equal(refused.code, Code.Unknown, "not a status: unknown");
});

Deno.test(
  "etcdError() names the NOSPACE alarm, and a request past the gRPC limit is invalid",
  pure,
  () => {
    const full = etcdError(
      "KV.Txn",
      new ConnectError(
        "etcdserver: mvcc: database space exceeded",
        Code.ResourceExhausted,
      ),
    );
    assert.ok(full instanceof EtcdNoSpaceError);
    assert.match(full.message, /^etcd is out of space \(its NOSPACE alarm/);
    assert.match(full.message, /database space exceeded$/);
    const large = etcdError(
      "KV.Txn",
      new ConnectError(
        "grpc: received message larger than max (2097160 vs. 2097152)",
        Code.ResourceExhausted,
      ),
    );
    assert.equal(large.code, 3);
    assert.ok(!(large instanceof EtcdNoSpaceError));
  },
);

Deno.test("watchCancelled() types a cancel reason by its status", pure, () => {
  const stale = watchCancelled(
    "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
  );
  assert.equal(stale.code, UNAUTHENTICATED);
  assert.equal(
    stale.message,
    'Cannot call etcd "Watch": cancelled: etcdserver: invalid auth token',
  );
  assert.ok(
    watchCancelled(
      "rpc error: code = InvalidArgument desc = etcdserver: user name is empty",
    ) instanceof EtcdAuthError,
  );
  const denied = watchCancelled(
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
  );
  assert.equal(denied.code, 7);
  const plain = watchCancelled("no reason");
  assert.ok(plain instanceof EtcdError);
  assert.equal(plain.code, 1);
  assert.match(plain.message, /cancelled: no reason$/);
});

Deno.test(
  "reasonOf adds a cause's text only when the error does not carry it already",
  pure,
  () => {
    const refused = new Error("connect ECONNREFUSED 127.0.0.1:2379");
    const transport = new ConnectError(
      "stream failed: connect ECONNREFUSED 127.0.0.1:2379",
      Code.Unavailable,
      undefined,
      undefined,
      refused,
    );
    const typed = etcdError("KV.Range", transport);
    assert.equal(
      reasonOf(typed),
      'Cannot call etcd "KV.Range": stream failed: connect ECONNREFUSED 127.0.0.1:2379',
    );
    const wrapped = new Error("no answer", { cause: refused });
    assert.equal(
      reasonOf(wrapped),
      "no answer: connect ECONNREFUSED 127.0.0.1:2379",
    );
    assert.equal(reasonOf("text"), "text");
  },
);
