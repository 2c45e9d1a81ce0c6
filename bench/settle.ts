/**
 * The end of a measured window: the driver's loops finish the request each
 * is in, within a bound.
 *
 * @module
 */

import { delay } from "../message/io.ts";

/**
 * How long the loops may take, once the window has ended, to finish the
 * request each is in: a target that stops answering (etcd 3.4's v3lock can
 * wedge) fails the run instead of hanging the bench.
 */
export const STOP_GRACE_MS = 10_000;

/**
 * Waits for every loop to end, at most `graceMs`.
 *
 * @param loops The loops, told to stop.
 * @param graceMs The bound.
 * @throws {Error} Saying how many loops were still waiting on the target.
 */
export async function settle(
  loops: Promise<void>[],
  graceMs: number = STOP_GRACE_MS,
): Promise<void> {
  let ended = 0;
  const all = Promise.all(loops.map((loop) => loop.finally(() => ended++)));
  const stop = new AbortController();
  const late = delay(graceMs, stop.signal).then((aborted) => !aborted);
  const timedOut = await Promise.race([all.then(() => false), late]);
  stop.abort();
  if (timedOut) {
    throw new Error(
      `${loops.length - ended} of ${loops.length} clients were still in a ` +
        `request ${graceMs / 1000} s after the window ended: the target ` +
        "stopped answering",
    );
  }
}
