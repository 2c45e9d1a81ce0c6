import assert from "node:assert/strict";
import {
  EtcdAuthError,
  EtcdError,
  etcdError,
  EtcdNoSpaceError,
  UNAUTHENTICATED,
  watchCancelled,
} from "./etcd_errors.ts";

const pure = { permissions: "none" } as const;

Deno.test("etcdError() types a unary answer by its code", pure, () => {
  const stale = etcdError("/v3/kv/range", {
    error: "etcdserver: invalid auth token",
    message: "etcdserver: invalid auth token",
    code: 16,
  }, 401);
  assert.equal(stale.code, UNAUTHENTICATED);
  assert.equal(
    stale.message,
    'Cannot call etcd "/v3/kv/range": etcdserver: invalid auth token',
  );
  const wrong = etcdError("/v3/auth/authenticate", {
    message: "etcdserver: authentication failed, invalid user ID or password",
    code: 3,
  }, 400);
  assert.ok(wrong instanceof EtcdAuthError);
  assert.ok(
    etcdError("/v3/kv/put", {
      message: "etcdserver: user name is empty",
      code: 3,
    }, 400) instanceof EtcdAuthError,
  );
  const other = etcdError("/v3/kv/put", {
    message: "etcdserver: key is not provided",
    code: 3,
  }, 400);
  assert.equal(other.name, "EtcdError");
});

Deno.test(
  "etcdError() reads a stream's error chunk, and names the NOSPACE alarm",
  pure,
  () => {
    const chunk = etcdError("/v3/lease/keepalive", {
      grpc_code: 16,
      http_code: 401,
      message: "etcdserver: invalid auth token",
    }, 200);
    assert.equal(chunk.code, UNAUTHENTICATED);
    const full = etcdError("/v3/kv/txn", {
      message: "etcdserver: mvcc: database space exceeded",
      code: 8,
    }, 429);
    assert.ok(full instanceof EtcdNoSpaceError);
    assert.match(full.message, /^etcd is out of space \(its NOSPACE alarm/);
    assert.match(full.message, /database space exceeded$/);
  },
);

Deno.test("watchCancelled() types a cancel reason by its status", pure, () => {
  const stale = watchCancelled(
    "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
  );
  assert.equal(stale.code, UNAUTHENTICATED);
  assert.equal(
    stale.message,
    'Cannot call etcd "/v3/watch": cancelled: etcdserver: invalid auth token',
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
