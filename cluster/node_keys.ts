/**
 * The keys of one node's requests, from the one a new request takes to the
 * delete that ends it: seats reused once their key is gone for sure
 * (`request_seats.ts`), the keys of acquires whose outcome is unknown,
 * deleted whenever they show up (`abandoned_keys.ts`), and deletes that
 * carry the marks of the requests that hold next (`hand_off.ts`).
 *
 * @module
 */

import { AbandonedKeys } from "./abandoned_keys.ts";
import { deleteHandingOff, type HandOff } from "./hand_off.ts";
import type { LockMirror } from "./lock_mirror.ts";
import { RequestSeats, type SeatOf } from "./request_seats.ts";

/** What {@linkcode NodeKeys} deletes with. */
export interface KeyWriters extends Omit<HandOff, "mirror" | "onDeleted"> {
  /** The node's mirror. */
  mirror: () => LockMirror;
  /** Keeps a background task, so that disposal waits for it. */
  track: (task: Promise<void>) => Promise<void>;
}

/** The keys of one node's requests. */
export class NodeKeys {
  readonly #seats: RequestSeats;
  readonly #abandoned = new AbandonedKeys((keys) => this.#delete(keys, []));
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
   * A key whose acquire wrote nothing: free at once.
   *
   * @param key The key.
   * @param revision The revision of the acquire's answer.
   */
  unused(key: string, revision: number): void {
    this.#seats.unused(key, revision);
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
   * Deletes keys until etcd takes it, each with the marks of the requests
   * that hold once it is gone; then their seats are free.
   *
   * @param keys The keys.
   * @returns Once every delete has ended.
   */
  delete(keys: string[]): Promise<void> {
    return this.#delete(keys, keys.filter((k) => !this.#abandoned.has(k)));
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

  #delete(keys: string[], vacating: string[]): Promise<void> {
    const { mirror, track, ...writers } = this.#writers;
    const onDeleted = this.#seats.leaving(vacating);
    const handOff = { ...writers, mirror: mirror(), onDeleted };
    return track(deleteHandingOff(handOff, keys));
  }
}
