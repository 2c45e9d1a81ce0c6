/**
 * The JSON mapping of etcd's v3 gateway, as pure functions: keys and values
 * are UTF-8 strings here and base64 on the wire, int64 fields are decimal
 * strings on the wire and numbers here (revisions fit 2^53 for millennia),
 * lease ids stay decimal strings, and fields at their default value are left
 * out by etcd.
 *
 * @module
 */

/**
 * A gateway answer as parsed JSON: loosely typed on purpose, read only by the
 * decoders of this module and the client.
 */
// deno-lint-ignore no-explicit-any
export type GatewayJson = any;

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

/** A UTF-16 unit from 0x80 on: a string without one is its own UTF-8. */
const NON_ASCII = /[\u0080-\uffff]/;

/**
 * The key right after every key that starts with `prefix`, as etcd's
 * `range_end` wants it.
 *
 * @param prefix The prefix.
 * @returns The range end, base64.
 */
export function prefixEnd(prefix: string): string {
  if (prefix === "") return btoa("\0");
  if (!NON_ASCII.test(prefix)) {
    // Each character is a byte: the last one raised is at most 0x80, which
    // `btoa` takes as that byte.
    const last = prefix.charCodeAt(prefix.length - 1) + 1;
    return btoa(prefix.slice(0, -1) + String.fromCharCode(last));
  }
  // UTF-8 never contains 0xff, so raising the last byte cannot overflow.
  const bytes = encoder.encode(prefix);
  bytes[bytes.length - 1]!++;
  return bytes.toBase64();
}

/**
 * Base64 of a string's UTF-8 bytes. Keys and values are ASCII but for names
 * that are not: an ASCII string's characters are its UTF-8 bytes, and
 * `btoa` encodes them as they are, with no byte array between.
 *
 * @param text The string.
 * @returns Its base64.
 */
export function b64(text: string): string {
  return NON_ASCII.test(text) ? encoder.encode(text).toBase64() : btoa(text);
}

/**
 * A base64 field of the gateway back to a string. `atob` gives one
 * character per byte: when every byte is ASCII, that is the UTF-8 text.
 *
 * @param base64 The field; absent means empty.
 * @returns The string.
 */
export function unb64(base64: string | undefined): string {
  if (!base64) return "";
  const binary = atob(base64);
  if (!NON_ASCII.test(binary)) return binary;
  return decoder.decode(Uint8Array.fromBase64(base64));
}

/**
 * One key of a gateway answer, decoded.
 *
 * @param kv The gateway's `mvccpb.KeyValue`.
 * @returns The key.
 */
export function decodeKeyValue(kv: GatewayJson): KeyValue {
  return {
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: Number(kv.create_revision ?? 0),
    modRevision: Number(kv.mod_revision ?? 0),
    lease: String(kv.lease ?? "0"),
  };
}

/**
 * The gateway's key and range end of a range.
 *
 * @param range The range.
 * @returns `{key, range_end?}`, base64.
 */
export function rangeKeys(
  range: KeyRange,
): { key: string; range_end?: string } {
  const keys: { key: string; range_end?: string } = { key: b64(range.key) };
  if (range.prefix) keys.range_end = prefixEnd(range.key);
  else if (range.end !== undefined) keys.range_end = b64(range.end);
  return keys;
}

/**
 * The revision in a gateway answer's header.
 *
 * @param body The answer.
 * @returns The revision, 0 when absent.
 */
export function revisionOf(body: GatewayJson): number {
  return Number(body.header?.revision ?? 0);
}

/**
 * The gateway body of a range read.
 *
 * @param request The read.
 * @returns Its JSON.
 */
export function rangeBody(request: RangeRequest): Record<string, unknown> {
  const body: Record<string, unknown> = rangeKeys(request);
  if (request.revision) body.revision = String(request.revision);
  if (request.limit) body.limit = String(request.limit);
  return body;
}

/**
 * The gateway body of a put.
 *
 * @param request The put.
 * @returns Its JSON.
 */
export function putBody(request: PutRequest): Record<string, unknown> {
  const body: Record<string, unknown> = {
    key: b64(request.key),
    value: b64(request.value),
  };
  if (request.lease) body.lease = request.lease;
  return body;
}

const TARGETS = {
  create: ["CREATE", "create_revision"],
  mod: ["MOD", "mod_revision"],
  version: ["VERSION", "version"],
  value: ["VALUE", "value"],
  lease: ["LEASE", "lease"],
} as const;

const RESULTS = {
  "==": "EQUAL",
  "!=": "NOT_EQUAL",
  "<": "LESS",
  ">": "GREATER",
} as const;

function compareBody(compare: Compare): Record<string, unknown> {
  const [target, field] = TARGETS[compare.target];
  const body: Record<string, unknown> = rangeKeys(compare);
  body.target = target;
  body.result = RESULTS[compare.result];
  body[field] = compare.target === "value"
    ? b64(String(compare.value))
    : String(compare.value);
  return body;
}

function opBody(op: TxnOp): Record<string, unknown> {
  if ("put" in op) return { request_put: putBody(op.put) };
  if ("range" in op) return { request_range: rangeBody(op.range) };
  if ("txn" in op) {
    const { compare, success, failure } = op.txn;
    return { request_txn: txnBody(compare, success, failure) };
  }
  return { request_delete_range: rangeKeys(op.deleteRange) };
}

/**
 * A range answer, decoded.
 *
 * @param body The gateway's answer.
 * @returns The keys read.
 */
export function decodeRange(body: GatewayJson): RangeResponse {
  return {
    kvs: (body.kvs ?? []).map(decodeKeyValue),
    more: body.more === true,
    revision: revisionOf(body),
  };
}

/**
 * The gateway body of a txn.
 *
 * @param compare The comparisons.
 * @param success Run when they all hold.
 * @param failure Run otherwise.
 * @returns Its JSON.
 */
export function txnBody(
  compare: Compare[],
  success: TxnOp[],
  failure: TxnOp[],
): Record<string, unknown> {
  return {
    compare: compare.map(compareBody),
    success: success.map(opBody),
    failure: failure.map(opBody),
  };
}

/**
 * A txn answer, decoded.
 *
 * @param body The gateway's answer.
 * @returns Which branch ran, its answers and the revision.
 */
export function decodeTxn(body: GatewayJson): TxnResponse {
  return {
    succeeded: body.succeeded === true,
    revision: revisionOf(body),
    responses: (body.responses ?? []).map(decodeOpResponse),
  };
}

function decodeOpResponse(r: GatewayJson): TxnOpResponse {
  if (r.response_range) return { range: decodeRange(r.response_range) };
  if (r.response_delete_range) {
    return { deleted: Number(r.response_delete_range.deleted ?? 0) };
  }
  if (r.response_txn) {
    return {
      txn: {
        succeeded: r.response_txn.succeeded === true,
        responses: (r.response_txn.responses ?? []).map(decodeOpResponse),
      },
    };
  }
  return {};
}
