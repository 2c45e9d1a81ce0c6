/**
 * The few libc functions pklock calls through Deno's FFI (`--allow-ffi`):
 * `signal()`, to ignore SIGUSR1, and `ioctl()`, to let `run`'s command
 * inherit the connection that holds its lock.
 *
 * @module
 */

/** Where libc lives on the systems pklock supports. */
const PATHS: Partial<Record<typeof Deno.build.os, string>> = {
  linux: "libc.so.6",
  darwin: "libSystem.B.dylib",
};

const SYMBOLS = {
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  // Variadic in C; called with no third argument.
  ioctl: { parameters: ["i32", "u64"], result: "i32" },
} as const;

/** The functions, as {@linkcode libc} returns them. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let opened: Libc | undefined;

/**
 * Opens libc once.
 *
 * @returns Its functions, or why they cannot be had (no `--allow-ffi`, an
 *   unsupported system).
 */
export function libc(): Libc | string {
  if (opened !== undefined) return opened;
  const path = PATHS[Deno.build.os];
  if (path === undefined) return `no libc known on ${Deno.build.os}`;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return "without --allow-ffi";
  }
  try {
    opened = Deno.dlopen(path, SYMBOLS).symbols;
    return opened;
  } catch (error) {
    return `cannot open ${path}: ${(error as Error).message}`;
  }
}
