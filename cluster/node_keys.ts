/**
 * The keys of one node's requests, from the one a new request takes to the
 * delete that ends it: seats reused once their key is gone for sure
 * (`request_seats.ts`), the keys of acquires whose outcome is unknown,
 * deleted whenever they show up (`abandoned_keys.ts`), and the deletes that
 * end them (`request_deletes.ts`).
 *
 * @module
 */

import { AbandonedKeys } from "./abandoned_keys.ts";
import {
  deleteRequestKeys,
  type Deletion,
  type KeyDeleters,
} from "./request_deletes.ts";
import type { LockMirror } from "./lock_mirror.ts";
import { RequestSeats, type SeatOf } from "./request_seats.ts";

/** What {@linkcode NodeKeys} deletes with. */
export interface KeyWriters extends Omit<KeyDeleters, "onDeleted"> {
  /** The node's mirror. */
  mirror: () => LockMirror;
  /** Keeps a background task, so that disposal waits for it. */
  track: (task: Promise<void>) => Promise<void>;
}

/** The keys of one node's requests. */
export class NodeKeys {
  readonly #seats: RequestSeats;
  readonly #abandoned = new AbandonedKeys((keys) =>
    this.#delete(keys.map((key) => ({ key })), [])
  );
  readonly #writers: KeyWriters;

  /**
   * @param root The root prefix.
   * @param node The node's lease id in hex.
   * @param writers What deletes go through.
   */
  constructor(root: string, node: string, writers: KeyWriters) {
    this.#seats = new RequestSeats(root, node);
    this.#writers = writers;
  }

  /**
   * The key of a new request ({@linkcode RequestSeats.take}).
   *
   * @param request What the key depends on.
   * @returns The key.
   */
  take(request: SeatOf): string {
    return this.#seats.take(request, this.#writers.mirror().revision);
  }

  /**
   * The key of a request that ended as its acquire answered: deleted when
   * the acquire wrote it, else free at once.
   *
   * @param request The request, its create revision set (0: not written).
   * @param revision The revision of the acquire's answer.
   * @returns Once deleted.
   */
  async discard(
    request: Deletion & { key: string },
    revision: number,
  ): Promise<void> {
    if (request.createRevision) await this.delete([request]);
    else this.#seats.unused(request.key, revision);
  }

  /**
   * A key whose acquire's outcome is unknown: deleted now and whenever it
   * shows up, and never taken again.
   *
   * @param key The key.
   */
  abandon(key: string): void {
    this.#seats.retire(key);
    this.#abandoned.add(key);
  }

  /**
   * Deletes requests' keys until etcd takes it, each only while it is still
   * that request's (its create revision); then their seats are free. A request
   * that wrote nothing (create revision 0) has nothing to delete; one whose
   * acquire's outcome is unknown was abandoned, and is deleted as such.
   *
   * @param keys The keys, each with its request's create revision.
   * @returns Once every delete has ended.
   */
  delete(keys: Deletion[]): Promise<void> {
    const written = keys.filter(({ createRevision }) => createRevision);
    const vacating = written.map(({ key }) => key).filter((key) =>
      !this.#abandoned.has(key)
    );
    return this.#delete(written, vacating);
  }

  /**
   * Deletes the abandoned keys the mirror shows.
   *
   * @param mirror The node's mirror, after a watch batch or a re-list.
   */
  sweep(mirror: LockMirror): void {
    this.#abandoned.sweep(mirror);
  }

  /** Forgets the abandoned keys: they went with the node's lease. */
  clear(): void {
    this.#abandoned.clear();
  }

  #delete(keys: Deletion[], vacating: string[]): Promise<void> {
    const { etcd, batch, signal, track } = this.#writers;
    const onDeleted = this.#seats.leaving(vacating);
    return track(deleteRequestKeys({ etcd, batch, signal, onDeleted }, keys));
  }
}
