/**
 * Records of the grants that deletes made. Such a grant writes nothing: every
 * node that saw its revision knows its token, but a node that lists the lock
 * space later (at its start, or when its watch fell behind a compaction)
 * cannot. So a hold that lasts is recorded in its key: after
 * {@linkcode RECORD_AFTER_MS} of holding, its node writes the grant's
 * revision and slot into its value. Short holds, most of them, write
 * nothing.
 *
 * @module
 */

import type { GroupCommit } from "./group_commit.ts";
import type { Grant } from "./lock_mirror.ts";
import type { ClusterRequest } from "./own_requests.ts";
import type { RequestValue } from "./request_keys.ts";
import { markWrite } from "./request_writes.ts";

/** How long a hold lasts before its grant is recorded, in ms. */
export const RECORD_AFTER_MS = 1_000;

/** What {@linkcode GrantRecords} writes with. */
export interface GrantRecorder {
  /** The node's group commit. */
  batch: GroupCommit;
  /** The node's lease. */
  lease: string;
  /** Gives up (the node stops, or its lease is gone). */
  signal: AbortSignal;
  /** The request's value, as the node's mirror shows it now. */
  valueOf: (key: string) => RequestValue | undefined;
  /** Whether this node's request with this key and create revision holds. */
  holds: (key: string, createRevision: number) => boolean;
  /** Keeps a background task, so that disposal waits for it. */
  track: (task: Promise<void>) => void;
}

/** A grant waiting for its record: its request's key, and when it is due. */
interface Due {
  readonly key: string;
  readonly createRevision: number;
  readonly grant: Grant;
  readonly at: number;
}

/**
 * The grants of one node that deletes made, each recorded once its request
 * has held for {@linkcode RECORD_AFTER_MS}, if it still holds: one timer for
 * them all, since most holds end first. A record is written only while the
 * key is still the request's (its create revision); one etcd does not take
 * is not sent again: only a later listing misses it. What waits is a key,
 * a create revision and a grant per grant of the last second: bounded by
 * how fast etcd grants, whoever asks.
 */
export class GrantRecords {
  readonly #recorder: GrantRecorder;
  /** In the order they are due. */
  #due: Due[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** @param recorder What records are written with. */
  constructor(recorder: GrantRecorder) {
    this.#recorder = recorder;
    recorder.signal.addEventListener("abort", () => {
      clearTimeout(this.#timer);
      this.#due = [];
    }, { once: true });
  }

  /**
   * A request that deletes granted, to record should it still hold in
   * {@linkcode RECORD_AFTER_MS}.
   *
   * @param request The request, held.
   * @param grant Its grant, as the mirror made it.
   */
  add(request: ClusterRequest, grant: Grant): void {
    if (this.#recorder.signal.aborted) return;
    const { key, createRevision } = request;
    const at = performance.now() + RECORD_AFTER_MS;
    this.#due.push({ key, createRevision, grant, at });
    if (this.#timer === undefined) this.#arm();
  }

  #arm(): void {
    const first = this.#due[0];
    if (first === undefined) return;
    const wait = Math.max(0, first.at - performance.now());
    this.#timer = setTimeout(() => this.#fire(), wait);
  }

  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    const ends = this.#due.findIndex((due) => due.at > now);
    const due = this.#due.splice(0, ends < 0 ? this.#due.length : ends);
    for (const entry of due) this.#record(entry);
    this.#arm();
  }

  #record({ key, createRevision, grant }: Due): void {
    const { batch, lease, valueOf, holds, track } = this.#recorder;
    if (!holds(key, createRevision)) return;
    const value = valueOf(key);
    if (value === undefined || value.granted) return;
    const record = markWrite({ key, createRevision, value, lease }, grant);
    track(batch.submit(record).then(() => {}, () => {}));
  }
}
