/**
 * A node's lock space on a lease of its own: opened with a new node lease, and
 * opened again, once etcd answers, after that lease is lost.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import type { EtcdClient } from "./etcd.ts";
import { EtcdLockSpace } from "./lock_space.ts";
import type { LockSpaceOptions } from "./lock_space_options.ts";
import { NodeLease, type NodeLeaseOptions } from "./node_lease.ts";

/** Options of {@linkcode ClusterLockSpace.open}. */
export interface ClusterLockSpaceOptions extends NodeLeaseOptions {
  /**
   * The root prefix of every key.
   *
   * @default {"/pklock/v1"}
   */
  prefix?: string | undefined;
  /**
   * How long the watch may stay silent before it is restarted elsewhere.
   *
   * @default {5000}
   */
  progressTimeoutMs?: number | undefined;
  /** Told when the node lease is lost, and when a new one is in place. */
  onLease?: ((state: "lost" | "renewed", detail: string) => void) | undefined;
}

/** Where a node space reports the outcomes etcd decides after the fact. */
export type SpaceReports = Pick<
  LockSpaceOptions,
  "onGrant" | "onLost" | "onRefused" | "onQueues"
>;

/** The pause between two tries at a new lease, in milliseconds. */
const RECOVER_EVERY_MS = 500;

/**
 * Takes a node lease and opens the lock space on it.
 *
 * @param etcd The etcd client.
 * @param options The lease's TTL and margin, the key prefix.
 * @param reports Where the space reports.
 * @returns The space; its lease is `space.lease`.
 * @throws {EtcdError} When etcd does not answer; no lease is left behind.
 */
export async function openNodeSpace(
  etcd: EtcdClient,
  options: ClusterLockSpaceOptions,
  reports: SpaceReports,
): Promise<EtcdLockSpace> {
  const lease = await NodeLease.grant(etcd, options);
  try {
    return await EtcdLockSpace.open(etcd, lease, {
      prefix: options.prefix,
      progressTimeoutMs: options.progressTimeoutMs,
      ...reports,
    });
  } catch (error) {
    await lease[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * Tries {@linkcode openNodeSpace} every half second until it succeeds or
 * `stop` aborts.
 *
 * @param etcd The etcd client.
 * @param options The lease's TTL and margin, the key prefix.
 * @param reports Where the space reports.
 * @param stop Ends the tries; a space opened after it is closed again.
 * @returns The new space, or `null` once stopped.
 */
export async function reopenNodeSpace(
  etcd: EtcdClient,
  options: ClusterLockSpaceOptions,
  reports: SpaceReports,
  stop: AbortSignal,
): Promise<EtcdLockSpace | null> {
  while (!stop.aborted) {
    try {
      const space = await openNodeSpace(etcd, options, reports);
      if (stop.aborted) {
        await space[Symbol.asyncDispose]();
        await space.lease[Symbol.asyncDispose]();
        return null;
      }
      return space;
    } catch {
      await delay(RECOVER_EVERY_MS, stop);
    }
  }
  return null;
}
