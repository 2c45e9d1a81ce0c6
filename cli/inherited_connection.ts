/**
 * `run`'s command inherits the connection that holds its lock, as flock(1)'s
 * command inherits the locked file descriptor. The server releases a lock
 * when the connection's last descriptor closes: with a copy in the command
 * (and in whatever it starts without closing it), a `run` killed with SIGKILL
 * leaves the lock held until the command, killed by the parent-death signal,
 * has exited, and until its background children have too. Without the copy,
 * the kernel closes `run`'s socket before the command has died, and the next
 * holder could be granted while the command still finishes a system call.
 *
 * Deno marks every descriptor close-on-exec and does not say which one a
 * connection uses, so the socket is found in /proc (the one connection of
 * this process to the server's port) and the mark cleared with `ioctl()` for
 * the moment of the spawn. Linux only; elsewhere, or without `--allow-ffi`,
 * the command inherits nothing and the parent-death signal alone applies.
 *
 * @module
 */

import { libc } from "./libc.ts";

/** ioctl requests: clear and set close-on-exec (asm-generic, x86, arm). */
const FIONCLEX = 0x5450n;
const FIOCLEX = 0x5451n;

/**
 * Finds this process's one established TCP connection to `port`.
 *
 * @returns The descriptor, or `undefined` when there is not exactly one.
 */
function socketTo(port: number): number | undefined {
  const byInode = new Map<string, number>();
  for (const { name } of Deno.readDirSync("/proc/self/fd")) {
    try {
      const link = Deno.readLinkSync(`/proc/self/fd/${name}`);
      const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
      if (inode !== undefined) byInode.set(inode, Number(name));
    } catch {
      // Closed while listing.
    }
  }
  const remote = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const found: number[] = [];
  for (const table of ["/proc/self/net/tcp", "/proc/self/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      // sl local_address rem_address st ... inode (the 10th field)
      const fields = line.trim().split(/\s+/);
      const fd = byInode.get(fields[9] ?? "");
      if (
        fd !== undefined && fields[3] === "01" && fields[2]?.endsWith(remote)
      ) {
        found.push(fd);
      }
    }
  }
  return found.length === 1 ? found[0] : undefined;
}

/**
 * Runs `spawn` with the connection to `port` inheritable, and marks it
 * close-on-exec again once the child has started.
 *
 * @param port The port of the server reached (of several given, the one
 *   that answered, which need not be `--port`).
 * @param spawn Starts the child.
 * @returns What `spawn` returned.
 * @throws Whatever `spawn` throws.
 */
export function withInheritedConnection<T>(port: number, spawn: () => T): T {
  const c = libc();
  let fd: number | undefined;
  if (Deno.build.os === "linux" && typeof c !== "string") {
    try {
      fd = socketTo(port);
    } catch {
      // No /proc to read: nothing is inherited.
    }
  }
  if (
    fd === undefined || typeof c === "string" || c.ioctl(fd, FIONCLEX) !== 0
  ) {
    return spawn();
  }
  try {
    return spawn();
  } finally {
    c.ioctl(fd, FIOCLEX);
  }
}
