/**
 * Keeps a node's {@linkcode LockMirror} current: lists the lock space at one
 * revision (paged, every page at that revision), then follows it with one
 * watch from the next revision. The watch itself survives member failures
 * and silence (`etcd_watch.ts`); this adds the two traps it cannot see:
 * compaction past the mirror's revision (re-list), and a stream that stays
 * alive but stale, as a member cut off from the quorum keeps sending its own
 * progress (restart elsewhere when the mirror lags a revision this node's own
 * writes have seen for longer than the progress timeout). A stale mirror only
 * delays grants, never grants wrongly.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import type { EtcdClient } from "./etcd.ts";
import { EtcdError } from "./etcd_errors.ts";
import type { KeyValue } from "./etcd_codec.ts";
import { EtcdCompactedError, watch } from "./etcd_watch.ts";
import { LinkedAbort } from "./linked_abort.ts";
import {
  LockMirror,
  type MirroredRequest,
  RevisionSplitError,
} from "./lock_mirror.ts";

/** Options of {@linkcode MirrorFeed.open}. */
export interface MirrorFeedOptions {
  /** The root prefix of every key. */
  root: string;
  /**
   * How long the watch may stay silent, or lag a revision seen elsewhere,
   * before it is restarted on another member.
   *
   * @default {5000}
   */
  progressTimeoutMs?: number | undefined;
  /** Stops the feed. */
  signal: AbortSignal;
  /**
   * Called after each watch batch applied to the mirror: the names whose
   * queues changed and the requests deleted.
   */
  onChange: (touched: Iterable<string>, deleted: MirroredRequest[]) => void;
  /**
   * Called after the mirror was rebuilt from a new listing (after
   * compaction): the caller compares it with what it knows.
   */
  onReset: () => void;
}

/** Keys read per page when listing. */
const PAGE = 1_000;
/** The pause before retrying a listing etcd did not answer. */
const RETRY_AFTER_MS = 100;

/** A {@linkcode LockMirror} kept current from etcd. */
export class MirrorFeed {
  /** Every request of the cluster, as of {@linkcode LockMirror.revision}. */
  readonly mirror: LockMirror;
  /** Settles once the feed has stopped. */
  readonly done: Promise<void>;
  readonly #etcd: EtcdClient;
  readonly #options: MirrorFeedOptions;
  readonly #timeoutMs: number;
  #generation = new LinkedAbort();
  readonly #catchUps: { revision: number; resolve: () => void }[] = [];
  #lagTimer: ReturnType<typeof setTimeout> | undefined;
  /** The revision `#lagTimer` waits for the mirror to reach. */
  #lagRevision = 0;

  private constructor(
    etcd: EtcdClient,
    options: MirrorFeedOptions,
    mirror: LockMirror,
  ) {
    this.#etcd = etcd;
    this.#options = options;
    this.#timeoutMs = options.progressTimeoutMs ?? 5_000;
    this.mirror = mirror;
    this.done = this.#follow();
  }

  /**
   * Lists the lock space and starts following it.
   *
   * @param etcd The etcd client.
   * @param options The prefix, the sink and the end.
   * @returns The feed, its mirror filled.
   * @throws {EtcdError} When the first listing fails.
   */
  static async open(
    etcd: EtcdClient,
    options: MirrorFeedOptions,
  ): Promise<MirrorFeed> {
    const mirror = new LockMirror(options.root);
    const { kvs, revision } = await list(etcd, options.root);
    mirror.reset(kvs, revision);
    return new MirrorFeed(etcd, options, mirror);
  }

  /**
   * Waits until the mirror has applied every change up to `revision` (a
   * write's, to read one's own writes in it).
   *
   * @param revision The revision.
   * @returns Once the mirror is at or past it.
   */
  caughtUp(revision: number): Promise<void> {
    if (this.mirror.revision >= revision) return Promise.resolve();
    this.seen(revision);
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#catchUps.push({ revision, resolve });
    return promise;
  }

  /**
   * Tells the feed that a write of this node committed at `revision`: if the
   * mirror has not reached it within the progress timeout, the watch is
   * stale and is restarted on another member.
   *
   * @param revision The write's revision.
   */
  seen(revision: number): void {
    if (
      this.#lagTimer !== undefined || revision <= this.mirror.revision ||
      this.#options.signal.aborted
    ) {
      return;
    }
    this.#lagRevision = revision;
    this.#lagTimer = setTimeout(() => {
      this.#lagTimer = undefined;
      if (this.mirror.revision < revision) {
        this.#etcd.rotate(this.#etcd.endpoint);
        this.#generation.abort();
      }
    }, this.#timeoutMs);
  }

  async #follow(): Promise<void> {
    const signal = this.#options.signal;
    while (!signal.aborted) {
      using generation = new LinkedAbort(signal);
      this.#generation = generation;
      const batches = watch(
        this.#etcd,
        { key: `${this.#options.root}/q/`, prefix: true },
        {
          startRevision: this.mirror.revision + 1,
          progressTimeoutMs: this.#timeoutMs,
          signal: generation.signal,
        },
      );
      try {
        for await (const { events, revision } of batches) {
          const deleted: MirroredRequest[] = [];
          const touched = this.mirror.apply(events, revision, deleted);
          this.#options.onChange(touched, deleted);
          this.#settleCatchUps();
          if (this.mirror.revision >= this.#lagRevision) {
            clearTimeout(this.#lagTimer);
            this.#lagTimer = undefined;
          }
        }
      } catch (error) {
        const relist = error instanceof EtcdCompactedError ||
          error instanceof RevisionSplitError;
        if (!relist) throw error;
        await this.#relist(signal);
      }
    }
    clearTimeout(this.#lagTimer);
  }

  async #relist(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        const { kvs, revision } = await list(this.#etcd, this.#options.root);
        this.mirror.reset(kvs, revision);
        this.#options.onReset();
        this.#settleCatchUps();
        return;
      } catch (error) {
        if (!(error instanceof EtcdError)) throw error;
        await delay(RETRY_AFTER_MS, signal);
      }
    }
  }

  #settleCatchUps(): void {
    for (let i = this.#catchUps.length - 1; i >= 0; i--) {
      const waiter = this.#catchUps[i]!;
      if (waiter.revision > this.mirror.revision) continue;
      this.#catchUps.splice(i, 1);
      waiter.resolve();
    }
  }
}

/** Every request key at one revision, read in pages at that revision. */
async function list(
  etcd: EtcdClient,
  root: string,
): Promise<{ kvs: KeyValue[]; revision: number }> {
  const kvs: KeyValue[] = [];
  let revision = 0;
  let from = `${root}/q/`;
  while (true) {
    const page = await etcd.range({
      key: from,
      end: `${root}/q0`, // the end of the prefix: "0" follows "/"
      limit: PAGE,
      revision: revision || undefined,
    });
    revision ||= page.revision;
    kvs.push(...page.kvs);
    if (!page.more || page.kvs.length === 0) return { kvs, revision };
    from = `${page.kvs.at(-1)!.key}\0`;
  }
}
