import assert from "node:assert/strict";
import fc from "fast-check";
import {
  b64,
  decodeKeyValue,
  decodeTxn,
  prefixEnd,
  rangeKeys,
  txnBody,
  type TxnRequest,
  unb64,
} from "./etcd_codec.ts";

const pure = { permissions: "none" } as const;

Deno.test(
  "b64() and unb64() round-trip UTF-8, and an absent field is empty",
  pure,
  () => {
    assert.equal(b64("/q/é"), btoa("/q/\xc3\xa9"));
    assert.equal(unb64(b64("zwei ✓ 🔒")), "zwei ✓ 🔒");
    assert.equal(unb64(undefined), "");
  },
);

/** Base64 of bytes, one character per byte through `btoa`. */
function bytesToBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

Deno.test(
  "b64() is the base64 of the UTF-8 bytes of any string, lone surrogates included",
  pure,
  () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: "binary" })),
        (text) => {
          assert.equal(b64(text), bytesToBase64(encoder.encode(text)));
        },
      ),
      { numRuns: 500 },
    );
    assert.equal(b64("a\ud800"), btoa("a\xef\xbf\xbd"));
  },
);

Deno.test(
  "unb64() decodes any bytes as UTF-8, invalid sequences replaced",
  pure,
  () => {
    const decoder = new TextDecoder();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        assert.equal(unb64(bytesToBase64(bytes)), decoder.decode(bytes));
      }),
      { numRuns: 500 },
    );
    assert.equal(unb64(btoa("\xef\xbb\xbfk")), "k", "a BOM is dropped");
    assert.equal(unb64(btoa("\xffk")), "\ufffdk");
    assert.throws(() => unb64("not base64!"));
  },
);

Deno.test(
  "prefixEnd() is the prefix with its last UTF-8 byte raised",
  pure,
  () => {
    assert.equal(prefixEnd("/a/"), b64("/a0"));
    assert.equal(prefixEnd("é"), btoa("\xc3\xaa"));
    assert.equal(
      prefixEnd(""),
      btoa("\0"),
      "the empty prefix covers every key",
    );
  },
);

Deno.test(
  "prefixEnd() of any string is its UTF-8 bytes with the last one raised",
  pure,
  () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ minLength: 1 }), fc.string({ unit: "binary" })),
        (prefix) => {
          const bytes = encoder.encode(prefix);
          if (bytes.length === 0) return;
          bytes[bytes.length - 1]!++;
          assert.equal(prefixEnd(prefix), bytesToBase64(bytes));
        },
      ),
      { numRuns: 500 },
    );
    assert.equal(prefixEnd("a\x7f"), btoa("a\x80"));
  },
);

Deno.test("rangeKeys() covers one key, a prefix, or [key, end)", pure, () => {
  assert.deepEqual(rangeKeys({ key: "k" }), { key: b64("k") });
  assert.deepEqual(rangeKeys({ key: "/p/", prefix: true }), {
    key: b64("/p/"),
    range_end: b64("/p0"),
  });
  assert.deepEqual(rangeKeys({ key: "a", end: "c" }), {
    key: b64("a"),
    range_end: b64("c"),
  });
});

Deno.test(
  "txnBody() maps compares and ops to the gateway's field names",
  pure,
  () => {
    assert.deepEqual(
      txnBody(
        [
          {
            key: "/q/",
            prefix: true,
            target: "create",
            result: "==",
            value: 0,
          },
          { key: "k", target: "value", result: "!=", value: "v" },
        ],
        [{ put: { key: "k", value: "v", lease: "7" } }],
        [{ range: { key: "k", limit: 1 } }, { deleteRange: { key: "d" } }],
      ),
      {
        compare: [
          {
            key: b64("/q/"),
            range_end: b64("/q0"),
            target: "CREATE",
            result: "EQUAL",
            create_revision: "0",
          },
          {
            key: b64("k"),
            target: "VALUE",
            result: "NOT_EQUAL",
            value: b64("v"),
          },
        ],
        success: [{
          request_put: { key: b64("k"), value: b64("v"), lease: "7" },
        }],
        failure: [
          { request_range: { key: b64("k"), limit: "1" } },
          { request_delete_range: { key: b64("d") } },
        ],
      },
    );
  },
);

Deno.test(
  "decodeTxn() and decodeKeyValue() read strings as numbers and fill defaults",
  pure,
  () => {
    const kv = {
      key: b64("k"),
      create_revision: "5",
      mod_revision: "9",
      lease: "12",
    };
    assert.deepEqual(decodeKeyValue(kv), {
      key: "k",
      value: "",
      createRevision: 5,
      modRevision: 9,
      lease: "12",
    });
    assert.deepEqual(
      decodeTxn({
        header: { revision: "10" },
        responses: [
          {
            response_range: {
              header: { revision: "10" },
              kvs: [kv],
              more: true,
            },
          },
          { response_delete_range: { deleted: "2" } },
          { response_put: {} },
        ],
      }),
      {
        succeeded: false,
        revision: 10,
        responses: [
          { range: { kvs: [decodeKeyValue(kv)], more: true, revision: 10 } },
          { deleted: 2 },
          {},
        ],
      },
    );
  },
);

Deno.test(
  "a nested txn maps to request_txn, and response_txn reads back with its branch",
  pure,
  () => {
    const inner: TxnRequest = {
      compare: [{ key: "k", target: "create", result: "==", value: 3 }],
      success: [{ put: { key: "k", value: "v" } }],
      failure: [{ range: { key: "k" } }],
    };
    assert.deepEqual(
      txnBody([], [{ txn: inner }], []),
      {
        compare: [],
        success: [{
          request_txn: {
            compare: [{
              key: b64("k"),
              target: "CREATE",
              result: "EQUAL",
              create_revision: "3",
            }],
            success: [{ request_put: { key: b64("k"), value: b64("v") } }],
            failure: [{ request_range: { key: b64("k") } }],
          },
        }],
        failure: [],
      },
    );
    assert.deepEqual(
      decodeTxn({
        header: { revision: "12" },
        succeeded: true,
        responses: [
          { response_txn: { header: {}, responses: [{ response_range: {} }] } },
          { response_txn: { succeeded: true, responses: [{}] } },
        ],
      }),
      {
        succeeded: true,
        revision: 12,
        responses: [
          {
            txn: {
              succeeded: false,
              responses: [{ range: { kvs: [], more: false, revision: 0 } }],
            },
          },
          { txn: { succeeded: true, responses: [{}] } },
        ],
      },
    );
  },
);
