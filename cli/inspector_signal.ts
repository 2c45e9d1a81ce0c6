/**
 * Deno ≥ 2.9.2 opens an unauthenticated V8 inspector on 127.0.0.1:9229 when
 * the process receives SIGUSR1, from 500 ms after start: any local user could
 * then run code inside the lock server, or inside `run` while it holds a
 * lock. The runtime has no flag or variable to turn this off (Deno 2.9.6,
 * `spawn_sigusr1_inspector_listener` in cli/worker.rs), so pklock sets
 * SIGUSR1 to "ignored" in the kernel through libc's `signal()`.
 *
 * The runtime's own listener is installed later, but installing a second
 * listener for a signal does not touch the kernel's disposition again
 * (signal-hook registers one handler per signal, on first use). So a JS
 * listener is added first, which makes the runtime's handler the kernel's,
 * and then the disposition is replaced by SIG_IGN: from then on SIGUSR1
 * reaches neither.
 *
 * @module
 */

import { libc } from "./libc.ts";

/** SIGUSR1's number on the systems pklock supports. */
const SIGUSR1: Partial<Record<typeof Deno.build.os, number>> = {
  linux: 10,
  darwin: 30,
};

/** Keeps the runtime's handler the kernel's; it never runs. */
function ignored(): void {}

/**
 * Makes this process ignore SIGUSR1, so that it never opens Deno's inspector.
 * Children inherit "ignored"; `run` restores the default for its command.
 *
 * @returns `null` when done, else why it could not be done (no
 *   `--allow-ffi`, an unsupported system), to be reported as a warning.
 */
export function ignoreInspectorSignal(): string | null {
  const signo = SIGUSR1[Deno.build.os];
  const c = libc();
  if (signo === undefined || typeof c === "string") {
    return `${
      typeof c === "string" ? c : `on ${Deno.build.os}`
    }, SIGUSR1 cannot be ignored`;
  }
  Deno.addSignalListener("SIGUSR1", ignored);
  // SIG_IGN is the handler "1"; the previous handler is not needed again.
  c.signal(signo, Deno.UnsafePointer.create(1n));
  return null;
}

/**
 * The warning to print when SIGUSR1 could not be ignored.
 *
 * @param why What {@linkcode ignoreInspectorSignal} returned.
 * @returns One line, with the risk spelled out.
 */
export function inspectorWarning(why: string): string {
  return `pklock: warning: ${why}; a SIGUSR1 sent to this process (pid ${Deno.pid}) opens Deno's V8 inspector on 127.0.0.1:9229, through which any local user can run code in it`;
}
