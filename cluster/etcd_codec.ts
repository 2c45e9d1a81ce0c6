/**
 * pklock's etcd requests and answers, and their mapping to and from etcd's
 * protobuf messages (`proto/rpc.proto`), as pure functions: keys and values
 * are UTF-8 strings here and bytes on the wire, int64 fields are `bigint` in
 * the messages and numbers here (revisions fit 2^53 for millennia), and lease
 * ids are decimal strings here.
 *
 * @module
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { KeyValue as PbKeyValue } from "./proto/kv_pb.ts";
import {
  Compare_CompareResult,
  Compare_CompareTarget,
  type CompareSchema,
  type PutRequestSchema,
  type RangeRequestSchema,
  type RangeResponse as PbRangeResponse,
  type RequestOpSchema,
  type ResponseOp,
  type TxnRequestSchema,
  type TxnResponse as PbTxnResponse,
} from "./proto/rpc_pb.ts";

/** A key and its revisions, as etcd stores it. */
export interface KeyValue {
  /** The key. */
  key: string;
  /** The value. */
  value: string;
  /** The revision of the key's creation. */
  createRevision: number;
  /** The revision of the key's last change. */
  modRevision: number;
  /** The lease the key is attached to, `"0"` for none. */
  lease: string;
}

/** Which keys a request covers: one key, a prefix, or `[key, end)`. */
export interface KeyRange {
  /** The key, or the first key of the range. */
  key: string;
  /** Covers every key starting with `key`. */
  prefix?: boolean | undefined;
  /** The end of the range, exclusive (ignored with `prefix`). */
  end?: string | undefined;
}

/** A range read. */
export interface RangeRequest extends KeyRange {
  /** Read at this revision; the latest when absent. */
  revision?: number | undefined;
  /** At most this many keys, in key order. */
  limit?: number | undefined;
}

/** A range read's answer. */
export interface RangeResponse {
  /** The keys read. */
  kvs: KeyValue[];
  /** Whether `limit` left keys out. */
  more: boolean;
  /** The store's revision the read saw. */
  revision: number;
}

/** A put. */
export interface PutRequest {
  /** The key. */
  key: string;
  /** The value. */
  value: string;
  /** The lease to attach the key to. */
  lease?: string | undefined;
}

/** A comparison of a txn: `target(key) result value`. */
export interface Compare extends KeyRange {
  /** What to compare. */
  target: "create" | "mod" | "version" | "value" | "lease";
  /** How. */
  result: "==" | "!=" | "<" | ">";
  /** With what: a revision, version or lease id, or a value. */
  value: number | string;
}

/**
 * A txn: if every comparison holds, `success`, else `failure`. Nested in
 * another txn's branch (etcd 3.3 and later), its comparisons see the store as
 * it was before the outer txn, not the writes of the ops before it.
 */
export interface TxnRequest {
  /** The comparisons. */
  compare: Compare[];
  /** Run when they all hold. */
  success: TxnOp[];
  /** Run otherwise. */
  failure: TxnOp[];
}

/** One operation of a txn branch. */
export type TxnOp =
  | { put: PutRequest }
  | { range: RangeRequest }
  | { deleteRange: KeyRange }
  | { txn: TxnRequest };

/** The answer to one operation of a txn branch, in order. */
export interface TxnOpResponse {
  /** Set for a range. */
  range?: RangeResponse;
  /** Set for a deleteRange: how many keys went. */
  deleted?: number;
  /** Set for a nested txn: which branch ran, and its answers. */
  txn?: { succeeded: boolean; responses: TxnOpResponse[] };
}

/** A txn's answer. */
export interface TxnResponse {
  /** Whether every comparison held (the success branch ran). */
  succeeded: boolean;
  /** The store's revision after the txn: the txn's own revision if it wrote. */
  revision: number;
  /** The branch's answers. */
  responses: TxnOpResponse[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** The `range_end` and `key` fields of a request over a range. */
export interface KeyBytes {
  /** The key, or the first key of the range. */
  key: Uint8Array;
  /** The end of the range, exclusive; absent for one key. */
  rangeEnd?: Uint8Array;
}

/** A range read as etcd's `RangeRequest`. */
export type RangeInit = MessageInitShape<typeof RangeRequestSchema>;
/** A txn as etcd's `TxnRequest`. */
export type TxnInit = MessageInitShape<typeof TxnRequestSchema>;
/** A put as etcd's `PutRequest`. */
export type PutInit = MessageInitShape<typeof PutRequestSchema>;
type OpInit = MessageInitShape<typeof RequestOpSchema>;

/**
 * The key right after every key that starts with `prefix`, as etcd's
 * `range_end` wants it: the prefix's UTF-8 bytes with the last one raised
 * (UTF-8 never contains 0xff, so raising it cannot overflow); `"\0"`, every
 * key, for the empty prefix.
 *
 * @param prefix The prefix.
 * @returns The range end.
 */
export function prefixEnd(prefix: string): Uint8Array {
  if (prefix === "") return new Uint8Array(1);
  const bytes = encoder.encode(prefix);
  bytes[bytes.length - 1]!++;
  return bytes;
}

/**
 * A string's UTF-8 bytes, as a key or value goes on the wire.
 *
 * @param text The string.
 * @returns Its bytes.
 */
export function utf8(text: string): Uint8Array {
  return text === "" ? EMPTY : encoder.encode(text);
}

/**
 * A key or value back to a string; invalid UTF-8 is replaced.
 *
 * @param bytes The bytes.
 * @returns The string.
 */
export function unutf8(bytes: Uint8Array): string {
  return bytes.length === 0 ? "" : decoder.decode(bytes);
}

/**
 * One key of an answer, decoded.
 *
 * @param kv etcd's `mvccpb.KeyValue`.
 * @returns The key.
 */
export function decodeKeyValue(kv: PbKeyValue): KeyValue {
  return {
    key: unutf8(kv.key),
    value: unutf8(kv.value),
    createRevision: Number(kv.createRevision),
    modRevision: Number(kv.modRevision),
    lease: String(kv.lease),
  };
}

/**
 * The key and range end of a range.
 *
 * @param range The range.
 * @returns `{key, rangeEnd?}`.
 */
export function rangeKeys(range: KeyRange): KeyBytes {
  const keys: KeyBytes = { key: utf8(range.key) };
  if (range.prefix) keys.rangeEnd = prefixEnd(range.key);
  else if (range.end !== undefined) keys.rangeEnd = utf8(range.end);
  return keys;
}

/**
 * The message of a range read.
 *
 * @param request The read.
 * @returns Its `RangeRequest`.
 */
export function rangeRequest(request: RangeRequest): RangeInit {
  const message: RangeInit = rangeKeys(request);
  if (request.revision) message.revision = BigInt(request.revision);
  if (request.limit) message.limit = BigInt(request.limit);
  return message;
}

/**
 * The message of a put.
 *
 * @param request The put.
 * @returns Its `PutRequest`.
 */
export function putRequest(request: PutRequest): PutInit {
  const message: PutInit = {
    key: utf8(request.key),
    value: utf8(request.value),
  };
  if (request.lease) message.lease = BigInt(request.lease);
  return message;
}

const TARGETS = {
  create: [Compare_CompareTarget.CREATE, "createRevision"],
  mod: [Compare_CompareTarget.MOD, "modRevision"],
  version: [Compare_CompareTarget.VERSION, "version"],
  value: [Compare_CompareTarget.VALUE, "value"],
  lease: [Compare_CompareTarget.LEASE, "lease"],
} as const;

const RESULTS = {
  "==": Compare_CompareResult.EQUAL,
  "!=": Compare_CompareResult.NOT_EQUAL,
  "<": Compare_CompareResult.LESS,
  ">": Compare_CompareResult.GREATER,
} as const;

function compareMessage(
  compare: Compare,
): MessageInitShape<typeof CompareSchema> {
  const [target, field] = TARGETS[compare.target];
  return {
    ...rangeKeys(compare),
    target,
    result: RESULTS[compare.result],
    targetUnion: field === "value"
      ? { case: field, value: utf8(String(compare.value)) }
      : { case: field, value: BigInt(compare.value) },
  };
}

function opMessage(op: TxnOp): OpInit {
  if ("put" in op) {
    return { request: { case: "requestPut", value: putRequest(op.put) } };
  }
  if ("range" in op) {
    return { request: { case: "requestRange", value: rangeRequest(op.range) } };
  }
  if ("txn" in op) {
    const { compare, success, failure } = op.txn;
    return {
      request: {
        case: "requestTxn",
        value: txnRequest(compare, success, failure),
      },
    };
  }
  return {
    request: { case: "requestDeleteRange", value: rangeKeys(op.deleteRange) },
  };
}

/**
 * A range answer, decoded.
 *
 * @param answer etcd's `RangeResponse`.
 * @returns The keys read.
 */
export function decodeRange(answer: PbRangeResponse): RangeResponse {
  return {
    kvs: answer.kvs.map(decodeKeyValue),
    more: answer.more,
    revision: Number(answer.header?.revision ?? 0),
  };
}

/**
 * The message of a txn.
 *
 * @param compare The comparisons.
 * @param success Run when they all hold.
 * @param failure Run otherwise.
 * @returns Its `TxnRequest`.
 */
export function txnRequest(
  compare: Compare[],
  success: TxnOp[],
  failure: TxnOp[],
): TxnInit {
  return {
    compare: compare.map(compareMessage),
    success: success.map(opMessage),
    failure: failure.map(opMessage),
  };
}

/**
 * A txn answer, decoded.
 *
 * @param answer etcd's `TxnResponse`.
 * @returns Which branch ran, its answers and the revision.
 */
export function decodeTxn(answer: PbTxnResponse): TxnResponse {
  return {
    succeeded: answer.succeeded,
    revision: Number(answer.header?.revision ?? 0),
    responses: answer.responses.map(decodeOpResponse),
  };
}

function decodeOpResponse({ response }: ResponseOp): TxnOpResponse {
  switch (response.case) {
    case "responseRange":
      return { range: decodeRange(response.value) };
    case "responseDeleteRange":
      return { deleted: Number(response.value.deleted) };
    case "responseTxn":
      return {
        txn: {
          succeeded: response.value.succeeded,
          responses: response.value.responses.map(decodeOpResponse),
        },
      };
    default:
      return {};
  }
}
