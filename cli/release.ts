/**
 * `pklock release --force`: the operators' last resort for a lock whose
 * holder's host has vanished.
 *
 * @module
 */

import { ExitCode } from "./exit_codes.ts";
import {
  type ConnectionFlags,
  connectWith,
  reachedFlags,
  readSecret,
  reportFailure,
} from "./connection_flags.ts";
import { StopSignals } from "./stop_signals.ts";

/** The environment variable that may hold the admin secret. */
export const ADMIN_SECRET_VARIABLE = "PKLOCK_ADMIN_SECRET";

/** Options of {@linkcode release}. */
export interface ReleaseOptions extends ConnectionFlags {
  /** Must be set: a forced release is never implied. */
  force?: boolean;
  /** A file holding the server's admin secret. */
  adminSecretFile?: string;
}

/**
 * Forces a lock free by closing its holders' connections.
 *
 * @param name The lock's name.
 * @param options Server flags, `force` and the admin secret's file.
 * @returns The exit code.
 */
export async function release(
  name: string,
  options: ReleaseOptions,
): Promise<number> {
  if (!options.force) {
    console.error(
      "pklock: release needs --force: it disconnects the lock's holder, whose job may still be running",
    );
    return ExitCode.Usage;
  }
  let secret: string | undefined;
  try {
    secret = await readSecret(options.adminSecretFile, ADMIN_SECRET_VARIABLE);
  } catch (error) {
    console.error(`pklock: ${(error as Error).message}`);
    return ExitCode.Failure;
  }
  if (secret === undefined) {
    console.error(
      `pklock: release --force needs the admin secret: --admin-secret-file or ${ADMIN_SECRET_VARIABLE}`,
    );
    return ExitCode.Usage;
  }
  using stop = new StopSignals();
  const client = await connectWith(options, "release", stop);
  if (typeof client === "number") return client;
  await using _client = client;
  try {
    const result = await client.forceRelease(name, secret);
    if (result.status === "notFound") {
      console.log(`Lock "${name}" is not held; nothing to release`);
      return ExitCode.Ok;
    }
    for (const holder of result.released ?? []) {
      const label = holder.label === undefined ? "" : ` (${holder.label})`;
      console.log(
        `Released lock "${name}" (token ${holder.token}): disconnected connection ${holder.connectionId} from ${holder.peer}${label}`,
      );
    }
    return ExitCode.Ok;
  } catch (error) {
    return reportFailure(error, reachedFlags(options, client));
  }
}
