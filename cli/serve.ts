/**
 * `pklock serve`: runs the lock server until SIGINT or SIGTERM.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  loadSettings,
  SettingsError,
  type SettingsOverrides,
} from "../server/config.ts";
import { LockServer } from "../server/lock_server.ts";
import { configureLogging } from "../server/log.ts";
import { StateFileError, TokenStore } from "../server/token_store.ts";
import { VERSION } from "../protocol/version.ts";
import { ExitCode } from "./exit_codes.ts";

/** Options of {@linkcode serve}. */
export interface ServeOptions extends SettingsOverrides {
  /** The settings file, if any. */
  config?: string;
}

const SIGNALS = ["SIGINT", "SIGTERM"] as const;

/**
 * Loads the settings, starts the server and serves until a signal arrives; a
 * second signal exits at once.
 *
 * @param options The settings file and command-line overrides.
 * @returns The exit code.
 */
export async function serve(options: ServeOptions): Promise<number> {
  const { config, ...overrides } = options;
  let settings;
  try {
    settings = await loadSettings(config, overrides);
  } catch (error) {
    if (!(error instanceof SettingsError)) throw error;
    console.error(`pklock: ${error.message}`);
    return ExitCode.Config;
  }
  await configureLogging(settings.log.level);
  const log = getLogger(["pklock", "server"]);
  let tokens: TokenStore;
  try {
    tokens = TokenStore.open(settings.stateFile);
  } catch (error) {
    if (!(error instanceof StateFileError)) throw error;
    console.error(`pklock: ${error.message}`);
    return ExitCode.Config;
  }
  let server: LockServer;
  try {
    server = new LockServer({
      hostname: settings.host,
      port: settings.port,
      allowed: settings.allowed,
      maxFrameBytes: settings.limits.maxFrameBytes,
      maxOutputBytes: settings.limits.maxOutputBytes,
      maxLockNameLength: settings.limits.maxLockNameLength,
      nextToken: () => tokens.next(),
    });
  } catch (error) {
    const where = config === undefined ? "" : ` (settings file "${config}")`;
    console.error(
      `pklock: Cannot listen on ${settings.host}:${settings.port}${where}: ${
        (error as Error).message
      }`,
    );
    return ExitCode.Config;
  }
  const { hostname, port } = server.addr;
  console.log(`pklock ${VERSION} listening on ${hostname}:${port}`);

  const stop = Promise.withResolvers<string>();
  const first = (signal: string) => () => stop.resolve(signal);
  const handlers = SIGNALS.map((signal) => [signal, first(signal)] as const);
  for (const [signal, handler] of handlers) {
    Deno.addSignalListener(signal, handler);
  }
  const received = await stop.promise;
  for (const [signal, handler] of handlers) {
    Deno.removeSignalListener(signal, handler);
    Deno.addSignalListener(signal, () => Deno.exit(ExitCode.Failure));
  }
  log.info("Received {signal}: closing connections and exiting", {
    signal: received,
  });
  await server.close();
  return ExitCode.Ok;
}
