/**
 * The keys of a node's acquires that failed with their outcome unknown
 * (etcd did not answer in time). Such a key is deleted at once, and again
 * once the node's mirror shows it: a txn that a frozen member had taken can
 * commit after that first delete, and the key would then hold (or block) its
 * lock, with no client behind it, for as long as the node's lease lives.
 *
 * @module
 */

import type { LockMirror } from "./lock_mirror.ts";

/** The most keys kept; beyond it the oldest is forgotten. */
const MAX_ABANDONED = 4096;

/** Keys to delete whenever they show up. */
export class AbandonedKeys {
  readonly #keys = new Set<string>();
  readonly #delete: (keys: string[]) => void;

  /** @param deleteKeys Deletes keys in the background. */
  constructor(deleteKeys: (keys: string[]) => void) {
    this.#delete = deleteKeys;
  }

  /**
   * Deletes a key now, and again once a mirror shows it.
   *
   * @param key The key of the failed acquire.
   */
  add(key: string): void {
    const keys = this.#keys;
    if (keys.size >= MAX_ABANDONED) keys.delete(keys.values().next().value!);
    keys.add(key);
    this.#delete([key]);
  }

  /**
   * Whether a key is one to delete whenever it shows up.
   *
   * @param key A key.
   * @returns Whether it is.
   */
  has(key: string): boolean {
    return this.#keys.has(key);
  }

  /**
   * Deletes the keys the mirror shows, and forgets them.
   *
   * @param mirror The node's mirror, after a watch batch or a re-list.
   */
  sweep(mirror: LockMirror): void {
    if (this.#keys.size === 0) return;
    for (const key of this.#keys) {
      if (!mirror.get(key)) continue;
      this.#keys.delete(key);
      this.#delete([key]);
    }
  }

  /** Forgets every key: they went with the node's lease. */
  clear(): void {
    this.#keys.clear();
  }
}
