/**
 * The exit codes of the `pklock` command, as documented in the README.
 *
 * @module
 */

/** Every exit code `pklock` uses of its own. */
export const ExitCode = {
  /** Done as asked. */
  Ok: 0,
  /** An unexpected failure. */
  Failure: 1,
  /** Bad command-line usage. */
  Usage: 2,
  /** The lock was not granted within `--wait` (or was busy with `--wait 0`). */
  NotAcquired: 3,
  /**
   * The server could not be reached, the connection was lost, or a cluster
   * node answered `unavailable` (it cannot reach etcd now).
   */
  Connection: 4,
  /** `serve` could not start: invalid settings, or the address is in use. */
  Config: 5,
  /**
   * The lock was lost while held (its connection died), and `run` stopped its
   * command; or it may have been: the server did not answer its release.
   */
  Lost: 6,
} as const;
