import assert from "node:assert/strict";
import fc from "fast-check";
import { FrameError, PklockError } from "./errors.ts";
import {
  BufferPool,
  decodeMessage,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
  FrameEncoder,
  HEADER_BYTES,
  type Message,
} from "./frame.ts";

/** A test with no permissions at all: the codec is pure, and this proves it. */
function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

const utf8 = new TextEncoder();

function concat(...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

/** A frame around raw payload bytes, built by hand rather than by the codec. */
function rawFrame(payload: Uint8Array | string): Uint8Array {
  const body = typeof payload === "string" ? utf8.encode(payload) : payload;
  const length = body.length;
  return concat(
    Uint8Array.of(
      length >>> 24,
      (length >>> 16) & 0xff,
      (length >>> 8) & 0xff,
      length & 0xff,
    ),
    body,
  );
}

/** A decoder that copies every payload it is handed, since views expire. */
function collector(maxFrameBytes?: number) {
  const payloads: Uint8Array[] = [];
  const decoder = new FrameDecoder(
    (payload) => payloads.push(payload.slice()),
    maxFrameBytes === undefined ? {} : { maxFrameBytes },
  );
  return { decoder, payloads };
}

/** Feeds `bytes` cut at the given offsets and returns the messages decoded. */
function decodeInChunks(bytes: Uint8Array, cuts: readonly number[]): Message[] {
  const messages: Message[] = [];
  const decoder = new FrameDecoder((payload) =>
    messages.push(decodeMessage(payload))
  );
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    decoder.push(bytes.subarray(from, cut));
    from = cut;
  }
  assert.equal(decoder.partial, false);
  return messages;
}

function assertFrameError(
  action: () => unknown,
  code: FrameError["code"],
): FrameError {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof FrameError, `expected a FrameError "${code}"`);
  assert.ok(caught instanceof PklockError);
  assert.equal(caught.name, "FrameError");
  assert.equal(caught.code, code);
  return caught;
}

/** Strings from every corner of UTF-16, lone surrogates included. */
const anyText = fc.oneof(
  fc.string({ unit: "binary" }),
  fc.string({ unit: "grapheme" }),
  fc.string({
    unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((code) =>
      String.fromCharCode(code)
    ),
  }),
);

/** Any JSON object, with keys and strings outside ASCII too. */
const jsonObject = fc.dictionary(
  anyText,
  fc.jsonValue({ stringUnit: "binary", maxDepth: 3 }),
  { maxKeys: 6 },
);

/** What a message looks like after a trip through JSON (e.g. -0 becomes 0). */
function viaJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}

/** Sorted cut offsets inside a buffer of `length` bytes, duplicates allowed. */
function cutsOf(length: number, picks: readonly number[]): number[] {
  return picks.map((pick) => pick % (length + 1)).sort((a, b) => a - b);
}

// encodeFrame

test("encodeFrame() writes a 4-byte big-endian length then the UTF-8 JSON, byte for byte", () => {
  // {"id":1,"result":{"status":"ok"}}
  // deno-fmt-ignore
  const expected = Uint8Array.of(
    0x00, 0x00, 0x00, 0x21,
    0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x31, 0x2c,
    0x22, 0x72, 0x65, 0x73, 0x75, 0x6c, 0x74, 0x22, 0x3a,
    0x7b, 0x22, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x22, 0x3a,
    0x22, 0x6f, 0x6b, 0x22, 0x7d, 0x7d,
  );
  assert.deepEqual(encodeFrame({ id: 1, result: { status: "ok" } }), expected);
});

test("encodeFrame() counts the length prefix in bytes, not characters, for multi-byte UTF-8 and emoji", () => {
  // {"s":"é€😀"}: é is 2 bytes, € is 3, 😀 is 4 (a surrogate pair in UTF-16).
  // deno-fmt-ignore
  const expected = Uint8Array.of(
    0x00, 0x00, 0x00, 0x11,
    0x7b, 0x22, 0x73, 0x22, 0x3a, 0x22,
    0xc3, 0xa9,
    0xe2, 0x82, 0xac,
    0xf0, 0x9f, 0x98, 0x80,
    0x22, 0x7d,
  );
  assert.deepEqual(encodeFrame({ s: "é€😀" }), expected);
});

test("encodeFrame() writes every byte of the length prefix in big-endian order", () => {
  // The payload {"s":"xxx…"} has 8 bytes of JSON around the string.
  const length = 0x012345;
  const frame = encodeFrame({ s: "x".repeat(length - 8) });
  assert.equal(frame.length, HEADER_BYTES + length);
  assert.deepEqual(
    frame.subarray(0, HEADER_BYTES),
    Uint8Array.of(0, 1, 0x23, 0x45),
  );
  assert.deepEqual(
    frame.subarray(HEADER_BYTES, HEADER_BYTES + 6),
    utf8.encode('{"s":"'),
  );
  assert.deepEqual(frame.subarray(-2), utf8.encode('"}'));
});

test("encodeFrame() escapes lone surrogates so the payload stays valid UTF-8", () => {
  const frame = encodeFrame({ s: "\ud800" });
  assert.deepEqual(
    frame.subarray(HEADER_BYTES),
    utf8.encode('{"s":"\\ud800"}'),
  );
  assert.deepEqual(decodeMessage(frame.subarray(HEADER_BYTES)), {
    s: "\ud800",
  });
});

test("encodeFrame() returns a frame that owns its whole buffer", () => {
  const frame = encodeFrame({ a: 1 });
  assert.equal(frame.byteOffset, 0);
  assert.equal(frame.buffer.byteLength, frame.length);
});

// decodeMessage

test("decodeMessage() parses a JSON object, whitespace, escapes and nesting included", () => {
  assert.deepEqual(decodeMessage(utf8.encode("{}")), {});
  assert.deepEqual(
    decodeMessage(
      utf8.encode(
        ' \r\n\t{ "a" : [1, {"b": null}], "c": "\\u00e9\\ud83d\\ude00" } ',
      ),
    ),
    { a: [1, { b: null }], c: "é😀" },
  );
  assert.deepEqual(decodeMessage(utf8.encode('{"s":"é€😀"}')), { s: "é€😀" });
});

test("decodeMessage() reads a payload that is a view into a larger buffer", () => {
  const bytes = utf8.encode('xx{"a":1}yy');
  assert.deepEqual(decodeMessage(bytes.subarray(2, 9)), { a: 1 });
});

test("decodeMessage() rejects bytes that are not UTF-8 with invalid_utf8", () => {
  const cases = [
    Uint8Array.of(0xff),
    Uint8Array.of(0x80),
    Uint8Array.of(0xc0, 0xaf), // overlong "/"
    Uint8Array.of(0xed, 0xa0, 0x80), // a UTF-16 surrogate encoded as UTF-8
    Uint8Array.of(0xf4, 0x90, 0x80, 0x80), // beyond U+10FFFF
    concat(utf8.encode('{"s":"'), Uint8Array.of(0xe2, 0x82), utf8.encode('"}')), // truncated €
    concat(utf8.encode('{"s":"'), Uint8Array.of(0xf0, 0x9f, 0x98)), // truncated emoji at the end
  ];
  for (const payload of cases) {
    const error = assertFrameError(
      () => decodeMessage(payload),
      "invalid_utf8",
    );
    assert.equal(error.message, "Frame is not valid UTF-8");
    assert.ok(error.cause instanceof TypeError);
  }
});

test("decodeMessage() rejects text that is not JSON with invalid_json", () => {
  const cases = [
    "",
    " ",
    "{",
    '{"a":1',
    "{'a':1}",
    '{"a":1,}',
    "{a:1}",
    "undefined",
    "{} {}",
    '{"a":01}',
    "NaN",
  ];
  for (const text of cases) {
    const error = assertFrameError(
      () => decodeMessage(utf8.encode(text)),
      "invalid_json",
    );
    assert.equal(error.message, "Frame is not valid JSON");
    assert.ok(error.cause instanceof SyntaxError, JSON.stringify(text));
  }
});

test("decodeMessage() rejects JSON that is not an object with not_an_object", () => {
  const cases = [
    "[]",
    "[1,2]",
    '[{"a":1}]',
    "0",
    "-1.5",
    "1e3",
    "null",
    '""',
    '"{}"',
    "true",
    "false",
  ];
  for (const text of cases) {
    const error = assertFrameError(
      () => decodeMessage(utf8.encode(text)),
      "not_an_object",
    );
    assert.equal(error.message, "Frame is not a JSON object", text);
  }
});

test("decodeMessage() reports invalid UTF-8 before invalid JSON", () => {
  assertFrameError(
    () => decodeMessage(Uint8Array.of(0x5b, 0xff)),
    "invalid_utf8",
  );
});

// FrameDecoder

test("FrameDecoder delivers one payload from a chunk holding exactly one frame", () => {
  const { decoder, payloads } = collector();
  assert.equal(decoder.partial, false);
  decoder.push(encodeFrame({ id: 1, result: { status: "ok" } }));
  assert.deepEqual(payloads, [
    utf8.encode('{"id":1,"result":{"status":"ok"}}'),
  ]);
  assert.equal(decoder.partial, false);
});

test("FrameDecoder ignores empty chunks", () => {
  const { decoder, payloads } = collector();
  decoder.push(new Uint8Array(0));
  assert.equal(decoder.partial, false);
  const frame = encodeFrame({ a: 1 });
  decoder.push(frame.subarray(0, 2));
  decoder.push(new Uint8Array(0));
  assert.equal(decoder.partial, true);
  decoder.push(frame.subarray(2, 6));
  decoder.push(new Uint8Array(0));
  decoder.push(frame.subarray(6));
  assert.deepEqual(payloads, [utf8.encode('{"a":1}')]);
});

test("FrameDecoder copes with a frame split at every byte", () => {
  const frame = encodeFrame({ s: "é€😀", id: 7 });
  for (let cut = 0; cut <= frame.length; cut++) {
    assert.deepEqual(
      decodeInChunks(frame, [cut]),
      [{ s: "é€😀", id: 7 }],
      `cut at ${cut}`,
    );
  }
});

test("FrameDecoder copes with three frames cut at every pair of byte offsets", () => {
  const messages = [{ a: 1 }, { s: "日本語😀" }, {}];
  const bytes = concat(...messages.map(encodeFrame));
  for (let first = 0; first <= bytes.length; first++) {
    for (let second = first; second <= bytes.length; second++) {
      assert.deepEqual(
        decodeInChunks(bytes, [first, second]),
        messages,
        `cuts at ${first}, ${second}`,
      );
    }
  }
});

test("FrameDecoder copes with frames fed one byte at a time", () => {
  const messages = [{ a: 1 }, { b: "€" }, { c: [1, 2, 3] }];
  const bytes = concat(...messages.map(encodeFrame));
  const cuts = Array.from({ length: bytes.length - 1 }, (_, i) => i + 1);
  assert.deepEqual(decodeInChunks(bytes, cuts), messages);
});

test("FrameDecoder reports partial only while a frame is unfinished", () => {
  const { decoder } = collector();
  const frame = encodeFrame({ a: 1 });
  for (let at = 0; at < frame.length; at++) {
    decoder.push(frame.subarray(at, at + 1));
    assert.equal(decoder.partial, at < frame.length - 1, `after byte ${at}`);
  }
});

test("FrameDecoder delivers many frames coalesced in one chunk, in order", () => {
  const messages = Array.from(
    { length: 1000 },
    (_, id) => ({ id, s: "é".repeat(id % 7) }),
  );
  const messagesOut: Message[] = [];
  const decoder = new FrameDecoder((payload) =>
    messagesOut.push(decodeMessage(payload))
  );
  decoder.push(concat(...messages.map(encodeFrame)));
  assert.deepEqual(messagesOut, messages);
  assert.equal(decoder.partial, false);
});

test("FrameDecoder finishes a frame and starts the next one in the same chunk", () => {
  const first = encodeFrame({ a: 1 });
  const second = encodeFrame({ b: 2 });
  const third = encodeFrame({ c: 3 });
  const { decoder, payloads } = collector();
  decoder.push(first.subarray(0, 5)); // header and one byte of the body
  decoder.push(concat(first.subarray(5), second, third.subarray(0, 2))); // rest, a whole frame, half a header
  assert.equal(payloads.length, 2);
  assert.equal(decoder.partial, true);
  decoder.push(third.subarray(2));
  assert.deepEqual(
    payloads,
    [first, second, third].map((frame) => frame.subarray(HEADER_BYTES)),
  );
});

test("FrameDecoder reads chunks that are views into a larger buffer", () => {
  const frames = concat(encodeFrame({ a: 1 }), encodeFrame({ b: 2 }));
  const buffer = new Uint8Array(frames.length + 20).fill(0xee);
  buffer.set(frames, 10);
  const { decoder, payloads } = collector();
  decoder.push(buffer.subarray(10, 13));
  decoder.push(buffer.subarray(13, 10 + frames.length));
  assert.deepEqual(payloads, [utf8.encode('{"a":1}'), utf8.encode('{"b":2}')]);
});

test("FrameDecoder keeps no reference to a chunk: a read buffer reused between pushes does not corrupt a partial frame", () => {
  const frame = encodeFrame({ message: "hello, world" });
  const { decoder, payloads } = collector();
  const readBuffer = new Uint8Array(8);
  let at = 0;
  while (at < frame.length) {
    const n = Math.min(3, frame.length - at);
    readBuffer.set(frame.subarray(at, at + n));
    decoder.push(readBuffer.subarray(0, n));
    readBuffer.fill(0xff); // the next read overwrites the buffer
    at += n;
  }
  assert.deepEqual(payloads, [frame.subarray(HEADER_BYTES)]);
});

test("FrameDecoder hands over payloads of exactly the announced length", () => {
  const lengths: number[] = [];
  const decoder = new FrameDecoder((payload) => lengths.push(payload.length));
  const big = rawFrame("x".repeat(1000));
  decoder.push(concat(rawFrame("ab"), big.subarray(0, 500)));
  decoder.push(concat(big.subarray(500), rawFrame("c")));
  assert.deepEqual(lengths, [2, 1000, 1]);
});

test("FrameDecoder delivers zero-length frames as empty payloads, which are not JSON", () => {
  const empty = rawFrame("");
  assert.deepEqual(empty, Uint8Array.of(0, 0, 0, 0));
  const { decoder, payloads } = collector();
  decoder.push(concat(empty, empty, encodeFrame({ a: 1 }), empty));
  assert.deepEqual(payloads.map((payload) => payload.length), [0, 0, 7, 0]);
  assert.equal(decoder.partial, false);
  // A zero-length frame whose prefix is split still ends with its prefix.
  decoder.push(empty.subarray(0, 3));
  assert.equal(decoder.partial, true);
  decoder.push(empty.subarray(3));
  assert.equal(decoder.partial, false);
  assert.equal(payloads.length, 5);
  assertFrameError(() => decodeMessage(payloads[0]!), "invalid_json");
});

test("FrameDecoder delivers payloads that are then rejected by decodeMessage", () => {
  const messages: unknown[] = [];
  const decoder = new FrameDecoder((payload) => {
    try {
      messages.push(decodeMessage(payload));
    } catch (error) {
      messages.push((error as FrameError).code);
    }
  });
  decoder.push(concat(
    rawFrame(Uint8Array.of(0xff)),
    rawFrame("{"),
    rawFrame("[1]"),
    rawFrame("null"),
    rawFrame("42"),
    rawFrame('"s"'),
    rawFrame('{"ok":true}'),
  ));
  assert.deepEqual(messages, [
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "not_an_object",
    "not_an_object",
    "not_an_object",
    { ok: true },
  ]);
});

test("FrameDecoder accepts a frame of exactly the limit and rejects one byte more with frame_too_large", () => {
  const atLimit = collector(10);
  atLimit.decoder.push(rawFrame("0123456789"));
  assert.deepEqual(atLimit.payloads, [utf8.encode("0123456789")]);

  const over = collector(10);
  const error = assertFrameError(
    () => over.decoder.push(rawFrame("0123456789A")),
    "frame_too_large",
  );
  assert.equal(
    error.message,
    "Frame of 11 bytes exceeds the limit of 10 bytes",
  );
  assert.deepEqual(over.payloads, []);
});

test("FrameDecoder rejects a too-large frame as soon as its length prefix is complete, even when split across chunks", () => {
  for (let cut = 1; cut < HEADER_BYTES; cut++) {
    const { decoder, payloads } = collector(10);
    const header = Uint8Array.of(0, 0, 0, 11);
    decoder.push(header.subarray(0, cut));
    assert.equal(decoder.partial, true);
    assertFrameError(
      () => decoder.push(header.subarray(cut)),
      "frame_too_large",
    );
    assert.deepEqual(payloads, []);
  }
  // Byte by byte, the error comes with the fourth byte and no body is needed.
  const { decoder } = collector(10);
  decoder.push(Uint8Array.of(0));
  decoder.push(Uint8Array.of(0));
  decoder.push(Uint8Array.of(0));
  assertFrameError(() => decoder.push(Uint8Array.of(11)), "frame_too_large");
});

test("FrameDecoder accepts a length prefix of exactly the limit split across chunks", () => {
  for (let cut = 1; cut < HEADER_BYTES; cut++) {
    const { decoder, payloads } = collector(10);
    const frame = rawFrame("0123456789");
    decoder.push(frame.subarray(0, cut));
    decoder.push(frame.subarray(cut, 6));
    decoder.push(frame.subarray(6));
    assert.deepEqual(payloads, [utf8.encode("0123456789")], `cut at ${cut}`);
  }
});

test("FrameDecoder reads the high bytes of the length prefix as unsigned", () => {
  const { decoder } = collector(DEFAULT_MAX_FRAME_BYTES);
  const error = assertFrameError(
    () => decoder.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff)),
    "frame_too_large",
  );
  assert.equal(
    error.message,
    "Frame of 4294967295 bytes exceeds the limit of 65536 bytes",
  );
  const high = collector(DEFAULT_MAX_FRAME_BYTES);
  const highError = assertFrameError(
    () => high.decoder.push(Uint8Array.of(0x80, 0, 0, 0)),
    "frame_too_large",
  );
  assert.equal(
    highError.message,
    "Frame of 2147483648 bytes exceeds the limit of 65536 bytes",
  );
});

test("FrameDecoder delivers the frames before a too-large one in the same chunk", () => {
  const { decoder, payloads } = collector(10);
  assertFrameError(
    () =>
      decoder.push(
        concat(
          rawFrame("{}"),
          rawFrame("[]"),
          Uint8Array.of(0, 0, 1, 0),
          utf8.encode("xxxx"),
        ),
      ),
    "frame_too_large",
  );
  assert.deepEqual(payloads, [utf8.encode("{}"), utf8.encode("[]")]);
});

test("FrameDecoder limits payloads to 64 KiB by default", () => {
  assert.equal(DEFAULT_MAX_FRAME_BYTES, 65_536);
  const { decoder, payloads } = collector();
  decoder.push(Uint8Array.of(0, 1, 0, 0)); // exactly 65536: accepted, body pending
  assert.equal(decoder.partial, true);
  decoder.push(new Uint8Array(65_536));
  assert.equal(payloads.length, 1);
  assert.equal(payloads[0]!.length, 65_536);
  assertFrameError(
    () => decoder.push(Uint8Array.of(0, 1, 0, 1)),
    "frame_too_large",
  );
});

Deno.test({
  name:
    "FrameDecoder holds memory for the body bytes received, not for the length prefix",
  permissions: "none",
  fn() {
    const { decoder, payloads } = collector();
    decoder.push(Uint8Array.of(0, 1, 0, 0));
    assert.equal(decoder.partial, true);
    assert.equal(decoder.buffered, 0, "a bare 64 KiB prefix holds no body");
    const body = new Uint8Array(65_536).map((_, i) => i * 7);
    decoder.push(body.subarray(0, 100));
    assert.ok(decoder.buffered >= 100 && decoder.buffered <= 1024);
    // Growing as bytes arrive, the buffer stays within twice what came in.
    for (let at = 100; at < body.length; at += 1000) {
      decoder.push(body.subarray(at, Math.min(at + 1000, body.length)));
      const received = Math.min(at + 1000, body.length);
      if (payloads.length === 0) {
        assert.ok(
          decoder.buffered <= Math.max(1024, 2 * received),
          `${decoder.buffered} bytes held for ${received} received`,
        );
      }
    }
    assert.deepEqual(payloads, [body]);
    assert.equal(decoder.buffered, 0);
    assert.equal(decoder.partial, false);
  },
});

Deno.test({
  name:
    "FrameDecoder delivers a frame that arrives whole in one chunk as a view of that chunk",
  permissions: "none",
  fn() {
    const chunk = concat(rawFrame("{}"), rawFrame('{"a":1}'));
    const views: Uint8Array[] = [];
    const decoder = new FrameDecoder((payload) => views.push(payload));
    decoder.push(chunk);
    assert.equal(views.length, 2);
    for (const view of views) assert.equal(view.buffer, chunk.buffer);
    assert.equal(decoder.buffered, 0);
  },
});

test("FrameDecoder with a limit of 0 accepts only zero-length frames", () => {
  const { decoder, payloads } = collector(0);
  decoder.push(rawFrame(""));
  assert.equal(payloads.length, 1);
  assertFrameError(() => decoder.push(rawFrame("{}")), "frame_too_large");
});

test("FrameDecoder decodes any sequence of JSON objects cut into arbitrary chunks, in order (property)", () => {
  fc.assert(
    fc.property(
      fc.array(jsonObject, { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (messages, picks) => {
        const bytes = concat(...messages.map(encodeFrame));
        const decoded = decodeInChunks(bytes, cutsOf(bytes.length, picks));
        assert.deepEqual(decoded, messages.map(viaJson));
      },
    ),
    { numRuns: 300 },
  );
});

test("FrameDecoder delivers arbitrary payload bytes unchanged across arbitrary chunks (property)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (bodies, picks) => {
        const bytes = concat(...bodies.map(rawFrame));
        const { decoder, payloads } = collector(40);
        let from = 0;
        for (const cut of [...cutsOf(bytes.length, picks), bytes.length]) {
          decoder.push(bytes.subarray(from, cut));
          from = cut;
        }
        assert.deepEqual(payloads, bodies);
        assert.equal(decoder.partial, false);
      },
    ),
    { numRuns: 300 },
  );
});

// FrameEncoder

test("FrameEncoder writes the same bytes as encodeFrame", () => {
  const out = new FrameEncoder();
  const message = { id: 1, result: { status: "ok" } };
  assert.equal(out.append(message), 37);
  assert.equal(out.length, 37);
  assert.deepEqual(out.take(), encodeFrame(message));
  assert.equal(out.taken, 37);
  assert.equal(out.length, 0);
});

test("FrameEncoder coalesces frames appended before take() into one buffer", () => {
  const out = new FrameEncoder();
  const messages = [{ id: 1 }, { id: 2, s: "é€😀" }, {
    id: 3,
    result: { status: "ok" },
  }];
  let total = 0;
  for (const message of messages) {
    total += out.append(message);
    assert.equal(out.length, total);
  }
  const bytes = out.take();
  assert.deepEqual(bytes, concat(...messages.map(encodeFrame)));
  assert.equal(out.taken, total);
  assert.equal(out.length, 0);
  assert.deepEqual(decodeInChunks(bytes, []), messages);
});

test("FrameEncoder hands out an empty view when nothing was appended", () => {
  const out = new FrameEncoder();
  out.append({ a: 1 });
  out.take();
  const bytes = out.take();
  assert.equal(bytes.length, 0);
  assert.equal(out.taken, 0);
});

test("FrameEncoder grows its buffer and keeps the frames already appended", () => {
  const out = new FrameEncoder(new BufferPool(8));
  const messages = [
    { a: 1 },
    { s: "x".repeat(100) },
    { s: "€".repeat(500) },
    { s: "😀".repeat(3000) },
    { b: 2 },
  ];
  for (const message of messages) out.append(message);
  assert.deepEqual(out.take(), concat(...messages.map(encodeFrame)));
  // Both buffers grow as needed: the second batch is as large as the first.
  for (const message of messages) out.append(message);
  assert.deepEqual(out.take(), concat(...messages.map(encodeFrame)));
});

test("FrameEncoder works from an initial size of 0", () => {
  const out = new FrameEncoder(new BufferPool(0));
  out.append({ a: 1 });
  out.append({ s: "é" });
  assert.deepEqual(
    out.take(),
    concat(encodeFrame({ a: 1 }), encodeFrame({ s: "é" })),
  );
  out.append({ b: 2 });
  assert.deepEqual(out.take(), encodeFrame({ b: 2 }));
});

test("FrameEncoder handles messages whose UTF-8 is up to three times their UTF-16 length", () => {
  // "€" is one UTF-16 unit and three UTF-8 bytes: the worst case per unit.
  for (const initial of [1, 8, 64, 256]) {
    for (const count of [0, 1, 2, 20, 85, 86, 200]) {
      const out = new FrameEncoder(new BufferPool(initial));
      const message = { s: "€".repeat(count) };
      out.append({ pad: "x".repeat(count % 13) });
      out.append(message);
      assert.deepEqual(
        out.take(),
        concat(
          encodeFrame({ pad: "x".repeat(count % 13) }),
          encodeFrame(message),
        ),
        `initial ${initial}, count ${count}`,
      );
    }
  }
});

test("FrameEncoder leaves the taken view intact while new frames are appended, until the next take()", () => {
  const out = new FrameEncoder(new BufferPool(32));
  out.append({ id: 1 });
  out.append({ id: 2 });
  const first = out.take();
  const snapshot = first.slice();
  out.append({ id: 3 });
  assert.deepEqual(first, snapshot);
  out.append({ s: "z".repeat(1000) }); // forces the other buffer to grow
  assert.deepEqual(first, snapshot);
  out.append({ id: 4 });
  assert.deepEqual(first, snapshot);
  const second = out.take();
  assert.deepEqual(
    second,
    concat(
      encodeFrame({ id: 3 }),
      encodeFrame({ s: "z".repeat(1000) }),
      encodeFrame({ id: 4 }),
    ),
  );
  const secondSnapshot = second.slice();
  out.append({ id: 5 });
  out.append({ id: 6 });
  assert.deepEqual(second, secondSnapshot);
  assert.deepEqual(
    out.take(),
    concat(encodeFrame({ id: 5 }), encodeFrame({ id: 6 })),
  );
});

test("FrameEncoder borrows a pooled buffer only while it has bytes to send", () => {
  const pool = new BufferPool(64);
  const a = new FrameEncoder(pool);
  const b = new FrameEncoder(pool);
  a.append({ id: 1 });
  const first = a.take();
  assert.equal(a.taken, first.length);
  a.release();
  assert.equal(a.taken, 0);
  b.append({ id: 2 });
  const second = b.take();
  assert.equal(second.buffer, first.buffer);
  assert.deepEqual(second, encodeFrame({ id: 2 }));
  // take() releases the previous view's buffer too.
  b.append({ id: 3 });
  const third = b.take();
  assert.notEqual(third.buffer, second.buffer);
  b.append({ id: 4 });
  assert.equal(b.take().buffer, second.buffer);
});

test("FrameEncoder does not pool a buffer grown past the pool's size", () => {
  const pool = new BufferPool(64);
  const out = new FrameEncoder(pool);
  out.append({ s: "x".repeat(100) });
  const big = out.take();
  assert.ok(big.buffer.byteLength > 64);
  out.release();
  out.append({ id: 1 });
  const small = out.take();
  assert.equal(small.buffer.byteLength, 64);
  assert.deepEqual(small, encodeFrame({ id: 1 }));
});

test("BufferPool keeps at most maxFree buffers of its size", () => {
  const pool = new BufferPool(16, 2);
  const buffers = [pool.get(1), pool.get(16), pool.get(8)];
  assert.ok(buffers.every((buffer) => buffer.length === 16));
  assert.equal(new Set(buffers).size, 3);
  for (const buffer of buffers) pool.put(buffer);
  pool.put(new Uint8Array(32));
  const again = [pool.get(1), pool.get(1), pool.get(1)];
  assert.equal(again.filter((buffer) => buffers.includes(buffer)).length, 2);
  assert.equal(pool.get(17).length, 32);
  assert.equal(pool.get(33).length, 64);
});

test("FrameEncoder keeps its batch when a message cannot be serialized", () => {
  const out = new FrameEncoder(new BufferPool(16));
  out.append({ id: 1 });
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => out.append(cyclic), TypeError);
  assert.throws(() => out.append({ n: 1n }), TypeError);
  assert.equal(out.length, encodeFrame({ id: 1 }).length);
  out.append({ id: 2 });
  assert.deepEqual(
    out.take(),
    concat(encodeFrame({ id: 1 }), encodeFrame({ id: 2 })),
  );
});

test("FrameEncoder output equals concatenated encodeFrame output, and taken views stay intact until the next take() or release() (property)", () => {
  const step = fc.oneof(
    {
      weight: 4,
      arbitrary: jsonObject.map((message) => ({ append: message })),
    },
    { weight: 1, arbitrary: fc.constant({ take: true as const }) },
    { weight: 1, arbitrary: fc.constant({ release: true as const }) },
  );
  fc.assert(
    fc.property(
      fc.nat({ max: 64 }),
      fc.array(step, { maxLength: 30 }),
      (initial, steps) => {
        const out = new FrameEncoder(new BufferPool(initial));
        let pending: Uint8Array[] = [];
        let taken: { view: Uint8Array; copy: Uint8Array } | null = null;
        for (const action of [...steps, { take: true as const }]) {
          if ("append" in action) {
            const frame = encodeFrame(action.append);
            assert.equal(out.append(action.append), frame.length);
            pending.push(frame);
            if (taken !== null) assert.deepEqual(taken.view, taken.copy);
          } else if ("release" in action) {
            out.release();
            assert.equal(out.taken, 0);
            taken = null;
          } else {
            const view = out.take();
            assert.deepEqual(view, concat(...pending));
            assert.equal(out.taken, view.length);
            assert.equal(out.length, 0);
            taken = { view, copy: view.slice() };
            pending = [];
          }
          assert.equal(
            out.length,
            pending.reduce((sum, frame) => sum + frame.length, 0),
          );
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("FrameEncoder output cut into arbitrary chunks decodes back to the same messages (property)", () => {
  fc.assert(
    fc.property(
      fc.array(jsonObject, { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (messages, picks) => {
        const out = new FrameEncoder(new BufferPool(16));
        for (const message of messages) out.append(message);
        const bytes = out.take();
        assert.deepEqual(
          decodeInChunks(bytes, cutsOf(bytes.length, picks)),
          messages.map(viaJson),
        );
      },
    ),
    { numRuns: 200 },
  );
});
