/**
 * The cluster's live nodes, as `status` lists them: each node's key under
 * `<root>/nodes/` lives on its lease, so the keys are the live nodes.
 *
 * @module
 */

import { delay } from "../message/io.ts";
import type { EtcdClient } from "./etcd.ts";

/** How often the list of live nodes is read, in milliseconds. */
const NODES_EVERY_MS = 1_000;

/**
 * Reads the live nodes once.
 *
 * @param etcd The etcd client.
 * @param root The root prefix of every key.
 * @returns Their ids, sorted.
 * @throws {EtcdError} When etcd does not answer.
 */
export async function readNodes(
  etcd: EtcdClient,
  root: string,
): Promise<string[]> {
  const prefix = `${root}/nodes/`;
  const { kvs } = await etcd.range({ key: prefix, prefix: true });
  return kvs.map((kv) => kv.key.slice(prefix.length)).sort();
}

/**
 * Reads the live nodes every second until `signal` aborts; while etcd does
 * not answer, the last list stands.
 *
 * @param etcd The etcd client.
 * @param root The root prefix of every key.
 * @param signal Stops it.
 * @param seen Given each list read, sorted.
 */
export async function followNodes(
  etcd: EtcdClient,
  root: string,
  signal: AbortSignal,
  seen: (nodes: string[]) => void,
): Promise<void> {
  while (!(await delay(NODES_EVERY_MS, signal))) {
    try {
      seen(await readNodes(etcd, root));
    } catch {
      // etcd is away: the last list stands until it answers.
    }
  }
}
