import assert from "node:assert/strict";
import fc from "fast-check";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  decodeKeyValue,
  decodeTxn,
  prefixEnd,
  rangeKeys,
  type TxnRequest,
  txnRequest,
  unutf8,
  utf8,
} from "./etcd_codec.ts";
import { KeyValueSchema } from "./proto/kv_pb.ts";
import {
  Compare_CompareResult,
  Compare_CompareTarget,
  TxnRequestSchema,
  TxnResponseSchema,
} from "./proto/rpc_pb.ts";

const pure = { permissions: "none" } as const;
const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text);

Deno.test(
  "utf8() and unutf8() round-trip any string's UTF-8, and empty is empty",
  pure,
  () => {
    assert.deepEqual(utf8("/q/é"), new Uint8Array([47, 113, 47, 0xc3, 0xa9]));
    assert.equal(unutf8(utf8("zwei ✓ 🔒")), "zwei ✓ 🔒");
    assert.equal(unutf8(new Uint8Array()), "");
    assert.deepEqual(utf8("a\ud800"), bytes("a\ufffd"), "a lone surrogate");
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: "binary" })),
        (text) => assert.deepEqual(utf8(text), encoder.encode(text)),
      ),
      { numRuns: 500 },
    );
  },
);

Deno.test(
  "unutf8() decodes any bytes as UTF-8, invalid sequences replaced",
  pure,
  () => {
    const decoder = new TextDecoder();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (raw) => {
        assert.equal(unutf8(raw), decoder.decode(raw));
      }),
      { numRuns: 500 },
    );
    assert.equal(unutf8(new Uint8Array([0xef, 0xbb, 0xbf, 107])), "k", "BOM");
    assert.equal(unutf8(new Uint8Array([0xff, 107])), "\ufffdk");
  },
);

Deno.test(
  "prefixEnd() is the prefix with its last UTF-8 byte raised",
  pure,
  () => {
    assert.deepEqual(prefixEnd("/a/"), bytes("/a0"));
    assert.deepEqual(prefixEnd("é"), new Uint8Array([0xc3, 0xaa]));
    assert.deepEqual(prefixEnd("a\x7f"), new Uint8Array([97, 0x80]));
    assert.deepEqual(
      prefixEnd(""),
      new Uint8Array([0]),
      "the empty prefix covers every key",
    );
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ minLength: 1 }), fc.string({ unit: "binary" })),
        (prefix) => {
          const raised = encoder.encode(prefix);
          if (raised.length === 0) return;
          raised[raised.length - 1]!++;
          assert.deepEqual(prefixEnd(prefix), raised);
        },
      ),
      { numRuns: 500 },
    );
  },
);

Deno.test("rangeKeys() covers one key, a prefix, or [key, end)", pure, () => {
  assert.deepEqual(rangeKeys({ key: "k" }), { key: bytes("k") });
  assert.deepEqual(rangeKeys({ key: "/p/", prefix: true }), {
    key: bytes("/p/"),
    rangeEnd: bytes("/p0"),
  });
  assert.deepEqual(rangeKeys({ key: "a", end: "c" }), {
    key: bytes("a"),
    rangeEnd: bytes("c"),
  });
});

Deno.test(
  "txnRequest() maps compares and ops to etcd's messages, and they encode",
  pure,
  () => {
    const request = txnRequest(
      [
        { key: "/q/", prefix: true, target: "create", result: "==", value: 0 },
        { key: "k", target: "value", result: "!=", value: "v" },
        { key: "k", target: "lease", result: ">", value: "7" },
      ],
      [{ put: { key: "k", value: "v", lease: "7" } }],
      [{ range: { key: "k", limit: 1 } }, { deleteRange: { key: "d" } }],
    );
    assert.deepEqual(request, {
      compare: [
        {
          key: bytes("/q/"),
          rangeEnd: bytes("/q0"),
          target: Compare_CompareTarget.CREATE,
          result: Compare_CompareResult.EQUAL,
          targetUnion: { case: "createRevision", value: 0n },
        },
        {
          key: bytes("k"),
          target: Compare_CompareTarget.VALUE,
          result: Compare_CompareResult.NOT_EQUAL,
          targetUnion: { case: "value", value: bytes("v") },
        },
        {
          key: bytes("k"),
          target: Compare_CompareTarget.LEASE,
          result: Compare_CompareResult.GREATER,
          targetUnion: { case: "lease", value: 7n },
        },
      ],
      success: [{
        request: {
          case: "requestPut",
          value: { key: bytes("k"), value: bytes("v"), lease: 7n },
        },
      }],
      failure: [
        {
          request: {
            case: "requestRange",
            value: { key: bytes("k"), limit: 1n },
          },
        },
        { request: { case: "requestDeleteRange", value: { key: bytes("d") } } },
      ],
    });
    const wire = toBinary(TxnRequestSchema, create(TxnRequestSchema, request));
    const back = fromBinary(TxnRequestSchema, wire);
    assert.equal(back.compare[0]!.targetUnion.case, "createRevision");
    assert.deepEqual(back.compare[0]!.rangeEnd, bytes("/q0"));
    assert.equal(back.failure[1]!.request.case, "requestDeleteRange");
  },
);

Deno.test(
  "decodeTxn() and decodeKeyValue() read int64s as numbers, and lease ids as decimal strings",
  pure,
  () => {
    const kv = create(KeyValueSchema, {
      key: bytes("k"),
      createRevision: 5n,
      modRevision: 9n,
      lease: 7587888423475298820n,
    });
    assert.deepEqual(decodeKeyValue(kv), {
      key: "k",
      value: "",
      createRevision: 5,
      modRevision: 9,
      lease: "7587888423475298820",
    });
    const answer = create(TxnResponseSchema, {
      header: { revision: 10n },
      responses: [
        {
          response: {
            case: "responseRange",
            value: { header: { revision: 10n }, kvs: [kv], more: true },
          },
        },
        { response: { case: "responseDeleteRange", value: { deleted: 2n } } },
        { response: { case: "responsePut", value: {} } },
      ],
    });
    const decoded = {
      succeeded: false,
      revision: 10,
      responses: [
        { range: { kvs: [decodeKeyValue(kv)], more: true, revision: 10 } },
        { deleted: 2 },
        {},
      ],
    };
    assert.deepEqual(decodeTxn(answer), decoded);
    const wire = toBinary(TxnResponseSchema, answer);
    assert.deepEqual(decodeTxn(fromBinary(TxnResponseSchema, wire)), decoded);
  },
);

Deno.test(
  "a nested txn maps to requestTxn, and responseTxn reads back with its branch",
  pure,
  () => {
    const inner: TxnRequest = {
      compare: [{ key: "k", target: "create", result: "==", value: 3 }],
      success: [{ put: { key: "k", value: "v" } }],
      failure: [{ range: { key: "k" } }],
    };
    assert.deepEqual(txnRequest([], [{ txn: inner }], []), {
      compare: [],
      success: [{
        request: {
          case: "requestTxn",
          value: {
            compare: [{
              key: bytes("k"),
              target: Compare_CompareTarget.CREATE,
              result: Compare_CompareResult.EQUAL,
              targetUnion: { case: "createRevision", value: 3n },
            }],
            success: [{
              request: {
                case: "requestPut",
                value: { key: bytes("k"), value: bytes("v") },
              },
            }],
            failure: [{
              request: { case: "requestRange", value: { key: bytes("k") } },
            }],
          },
        },
      }],
      failure: [],
    });
    const answer = create(TxnResponseSchema, {
      header: { revision: 12n },
      succeeded: true,
      responses: [
        {
          response: {
            case: "responseTxn",
            value: {
              responses: [{ response: { case: "responseRange", value: {} } }],
            },
          },
        },
        {
          response: {
            case: "responseTxn",
            value: { succeeded: true, responses: [{}] },
          },
        },
      ],
    });
    assert.deepEqual(decodeTxn(answer), {
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
    });
  },
);
