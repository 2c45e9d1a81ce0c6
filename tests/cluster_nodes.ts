/**
 * Test helper: `pklock serve --etcd` child processes on a throw-away etcd
 * cluster, with the fast lease of the cluster tests (TTL 2 s, margin 0.5 s).
 *
 * @module
 */

import { delay } from "../message/io.ts";
import { DenoProcess, MAIN, settingsFile } from "./helpers.ts";

/** The node lease's TTL in the cluster tests, in seconds. */
export const TTL_S = 2;
/** The node lease's margin in the cluster tests, in milliseconds. */
export const MARGIN_MS = 500;

/** A running pklock node. */
export interface PklockNode extends AsyncDisposable {
  /** The node's process. */
  process: DenoProcess;
  /** The port it serves on. */
  port: number;
  /** Its id (its lease in hex), as status shows it. */
  node: string;
}

/**
 * Starts `pklock serve --port 0 --etcd …` and waits until it serves.
 *
 * @param endpoints The etcd members it may reach.
 * @param settings Further settings (an admin secret, …); a `cluster` object
 *   is merged into the node's own (etcd auth, TLS, a longer `ttl` and
 *   `margin`).
 * @returns The node; dispose of it with `await using`.
 */
export async function startNode(
  endpoints: readonly string[],
  settings: Record<string, unknown> = {},
): Promise<PklockNode> {
  const dir = await Deno.makeTempDir({ prefix: "pklock-node-" });
  const config = await settingsFile(dir, {
    ...settings,
    cluster: {
      endpoints,
      ttl: TTL_S,
      margin: MARGIN_MS,
      ...settings.cluster as Record<string, unknown> | undefined,
    },
  });
  const process = new DenoProcess(
    MAIN,
    ["serve", "--port", "0", "-c", config, "--etcd", endpoints.join(",")],
    {},
    dir,
  );
  try {
    const port = Number((await process.waitFor(/listening on .*:(\d+)\n/))[1]);
    const node = (await process.waitFor(/pklock node ([0-9a-f]+) /))[1]!;
    return {
      process,
      port,
      node,
      [Symbol.asyncDispose]: () => process[Symbol.asyncDispose](),
    };
  } catch (error) {
    await process[Symbol.asyncDispose]();
    throw error;
  }
}

/** What the waits below read of `status`. */
export interface ClusterStatus {
  /** Every lock, with its holders and waiters. */
  locks: {
    name: string;
    limit?: number;
    holders: { node?: string; since: string }[];
    waiters: { node?: string; since: string }[];
  }[];
}

/**
 * Asks again until `ok` holds: no event tells a client that another node's
 * request is queued or gone, so the test asks status again.
 *
 * @param ok Whether the cluster got there.
 * @throws {Error} After 500 tries 10 ms apart.
 */
export async function waitFor(ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await ok()) return;
    await delay(10);
  }
  throw new Error("The cluster never got there");
}

/**
 * Waits until status shows a lock as `ok` wants it.
 *
 * @param client Whose status to read.
 * @param name The lock.
 * @param ok Whether the lock (or its absence) is as wanted.
 */
export async function waitForLock(
  client: { status(): Promise<ClusterStatus> },
  name: string,
  ok: (lock: ClusterStatus["locks"][number] | undefined) => boolean,
): Promise<void> {
  await waitFor(async () =>
    ok((await client.status()).locks.find((l) => l.name === name))
  );
}

/**
 * Waits until status shows `count` waiters of a lock.
 *
 * @param client Whose status to read.
 * @param name The lock.
 * @param count How many.
 */
export function waitForWaiters(
  client: { status(): Promise<ClusterStatus> },
  name: string,
  count: number,
): Promise<void> {
  return waitForLock(client, name, (lock) => lock?.waiters.length === count);
}
