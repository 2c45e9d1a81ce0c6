/**
 * etcd's streamed watch: one `Watch` stream with one create request, kept
 * open, whose answers are the events. The watch survives member failures by
 * starting again, on the next endpoint, from the revision after the last one
 * delivered; it treats a stream that stays silent longer than
 * `progressTimeoutMs` as dead (members must run with
 * `--experimental-watch-progress-notify-interval` well below it). Compaction past that revision cannot be survived: it ends the
 * watch with {@linkcode EtcdCompactedError}, and the caller re-lists. A watch
 * refused for an expired auth token starts again with a new one.
 *
 * @module
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { EtcdClient } from "./etcd.ts";
import {
  EtcdError,
  etcdError,
  UNAUTHENTICATED,
  watchCancelled,
} from "./etcd_errors.ts";
import {
  decodeKeyValue,
  type KeyRange,
  type KeyValue,
  rangeKeys,
} from "./etcd_codec.ts";
import { Event_EventType } from "./proto/kv_pb.ts";
import { Watch, type WatchRequestSchema } from "./proto/rpc_pb.ts";
import { delay } from "../message/io.ts";
import { LinkedAbort } from "./linked_abort.ts";

/** Options of {@linkcode watch}. */
export interface WatchOptions {
  /** The first revision to deliver events of (the revision listed + 1). */
  startRevision: number;
  /**
   * How long the stream may stay silent (no event, no progress notification)
   * before it is taken for dead and started again elsewhere.
   *
   * @default {5000}
   */
  progressTimeoutMs?: number | undefined;
  /** Ends the watch. */
  signal?: AbortSignal | undefined;
}

/** One change of a watched key. */
export interface WatchEvent {
  /** A put (create or update) or a delete. */
  type: "put" | "delete";
  /** The key after the put, or as deleted (a delete's `modRevision` is its own). */
  kv: KeyValue;
}

/** What one watch response delivered. */
export interface WatchBatch {
  /**
   * Every change up to this revision has been delivered (a progress
   * notification has no events and only moves this).
   */
  revision: number;
  /** The changes, in revision order. */
  events: WatchEvent[];
}

/** The watch's start revision has been compacted away: re-list, watch again. */
export class EtcdCompactedError extends EtcdError {
  /** Always `"EtcdCompactedError"`. */
  override name = "EtcdCompactedError";
  /** The revision etcd compacted up to. */
  readonly compactRevision: number;

  /**
   * @param compactRevision The revision etcd compacted up to.
   * @param startRevision The revision the watch wanted.
   */
  constructor(compactRevision: number, startRevision: number) {
    super(
      `Cannot watch etcd from revision ${startRevision}: compacted up to ${compactRevision}`,
      11,
    );
    this.compactRevision = compactRevision;
  }
}

/**
 * Watches a key or range from a revision on, until `options.signal` aborts.
 *
 * @param client The etcd client (its endpoints and failover).
 * @param range What to watch.
 * @param options Where to start, the silence bound, the end.
 * @returns Batches of changes and progress, in revision order, each revision
 *   once.
 * @throws {EtcdCompactedError} When the revision to continue from is compacted.
 *
 * @example Following a prefix
 * ```ts ignore
 * for await (const batch of watch(etcd, { key: "/a/", prefix: true }, { startRevision: 1 })) {
 *   for (const event of batch.events) console.log(event.type, event.kv.key);
 * }
 * ```
 */
export async function* watch(
  client: EtcdClient,
  range: KeyRange,
  options: WatchOptions,
): AsyncGenerator<WatchBatch, void, undefined> {
  const silence = options.progressTimeoutMs ?? 5_000;
  const outer = options.signal;
  let next = options.startRevision;
  while (!outer?.aborted) {
    const endpoint = client.endpoint;
    using stream = new LinkedAbort(outer);
    const signal = stream.signal;
    using quiet = new Silence(silence, () => stream.abort());
    let token: string | undefined;
    try {
      token = await client.token(signal);
      const create: WatchInit = {
        requestUnion: {
          case: "createRequest",
          value: {
            ...rangeKeys(range),
            startRevision: BigInt(next),
            progressNotify: true,
          },
        },
      };
      const method = Watch.method.watch;
      const answers = await client.stream(
        endpoint,
        method,
        openUntil(create, signal),
        token,
        signal,
      );
      for await (const answer of answers) {
        quiet.heard();
        const compacted = Number(answer.compactRevision);
        if (compacted > 0) throw new EtcdCompactedError(compacted, next);
        if (answer.canceled) {
          throw watchCancelled(answer.cancelReason || "no reason");
        }
        if (answer.created) continue;
        const events: WatchEvent[] = answer.events.map((e) => ({
          type: e.type === Event_EventType.DELETE ? "delete" : "put",
          kv: decodeKeyValue(e.kv!),
        }));
        const last = events.at(-1);
        const revision = Number(answer.header?.revision ?? 0);
        if (last) next = Math.max(next, last.kv.modRevision + 1);
        else next = Math.max(next, revision + 1);
        yield { revision: next - 1, events };
      }
    } catch (error) {
      if (outer?.aborted) return;
      if (error instanceof EtcdCompactedError) throw error;
      const failed = error instanceof EtcdError
        ? error
        : etcdError("Watch", error);
      if (failed.code === UNAUTHENTICATED) client.refused(token);
    } finally {
      stream.abort();
    }
    client.rotate(endpoint);
    await delay(100, outer);
  }
}

/**
 * Calls `onSilent` once nothing has been heard for `ms`. Hearing something
 * only notes the time: the one timer, when it fires early, waits again for
 * the rest, so a busy stream does not clear and set a timer per message.
 */
class Silence implements Disposable {
  #last = performance.now();
  #timer: ReturnType<typeof setTimeout>;

  /**
   * @param ms How long a silence may last.
   * @param onSilent Called once, when one lasts longer.
   */
  constructor(ms: number, onSilent: () => void) {
    const check = () => {
      const quiet = performance.now() - this.#last;
      if (quiet >= ms) onSilent();
      else this.#timer = setTimeout(check, ms - quiet);
    };
    this.#timer = setTimeout(check, ms);
  }

  /** Something was heard: the silence starts again from now. */
  heard(): void {
    this.#last = performance.now();
  }

  /** Stops the timer. */
  [Symbol.dispose](): void {
    clearTimeout(this.#timer);
  }
}

type WatchInit = MessageInitShape<typeof WatchRequestSchema>;

/**
 * A stream of one request that stays open, not half-closed, until `signal`
 * aborts.
 */
async function* openUntil(
  request: WatchInit,
  signal: AbortSignal,
): AsyncGenerator<WatchInit> {
  yield request;
  if (signal.aborted) return;
  const { promise, resolve } = Promise.withResolvers<void>();
  signal.addEventListener("abort", () => resolve(), { once: true });
  await promise;
}
