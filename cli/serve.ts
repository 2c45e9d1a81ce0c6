/**
 * `pklock serve`: runs the lock server until SIGINT or SIGTERM.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  loadSettings,
  readSettingFile,
  type Settings,
  SettingsError,
  type SettingsOverrides,
} from "../server/config.ts";
import { LockServer, type LockServerOptions } from "../server/lock_server.ts";
import { configureLogging } from "../server/log.ts";
import { StateFileError, TokenStore } from "../server/token_store.ts";
import { VERSION } from "../protocol/version.ts";
import { ExitCode } from "./exit_codes.ts";

/** Reads the auth secret and TLS files the settings name. */
async function readSecrets(
  settings: Settings,
): Promise<Pick<LockServerOptions, "secret" | "tls">> {
  const read: Pick<LockServerOptions, "secret" | "tls"> = {};
  const { auth, tls } = settings;
  if (auth?.secret !== undefined) read.secret = auth.secret;
  if (auth?.secretFile !== undefined) {
    read.secret = (await readSettingFile(auth.secretFile, "auth.secretFile"))
      .trim();
    if (read.secret.length < 16) {
      throw new SettingsError(
        `The secret in "${auth.secretFile}" is shorter than 16 characters`,
      );
    }
  }
  if (tls !== undefined) {
    read.tls = {
      cert: await readSettingFile(tls.certFile, "tls.certFile"),
      key: await readSettingFile(tls.keyFile, "tls.keyFile"),
    };
  }
  return read;
}

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
  let secrets: Pick<LockServerOptions, "secret" | "tls">;
  try {
    secrets = await readSecrets(settings);
  } catch (error) {
    if (!(error instanceof SettingsError)) throw error;
    console.error(`pklock: ${error.message}`);
    return ExitCode.Config;
  }
  let server: LockServer;
  try {
    server = new LockServer({
      hostname: settings.host,
      port: settings.port,
      allowed: settings.allowed,
      ...settings.limits,
      ...(settings.heartbeat ? { heartbeat: settings.heartbeat } : {}),
      ...secrets,
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
