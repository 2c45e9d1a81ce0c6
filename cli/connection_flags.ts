/**
 * The flags every client subcommand shares to reach a server (address, TLS,
 * secret), and the one
 * place that turns them into a connection.
 *
 * @module
 */

import { type Command, InvalidArgumentError } from "commander";
import {
  connect,
  type ConnectOptions,
  type LockClient,
} from "../client/client.ts";
import { DEFAULT_PORT } from "../protocol/lock_protocol.ts";
import { ConnectionError, RemoteError } from "../message/errors.ts";
import { ExitCode } from "./exit_codes.ts";

/** Where the server is and how to reach it. */
export interface ConnectionFlags {
  /** The server's address. */
  host: string;
  /** The server's port. */
  port: number;
  /** Connect over TLS. */
  tls?: boolean;
  /** A PEM file of CA certificates to trust (implies `tls`). */
  caFile?: string;
  /** A file holding the shared secret. */
  secretFile?: string;
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown host";
  }
}

/** The environment variable that may hold the shared secret. */
export const SECRET_VARIABLE = "PKLOCK_SECRET";

/**
 * Adds `--host`, `--port`, `--tls`, `--ca-file` and `--secret-file`.
 *
 * @param command A client subcommand.
 * @returns The same command.
 */
export function withConnectionFlags(command: Command): Command {
  return command
    .option("--host <address>", "server address", "127.0.0.1")
    .option("-p, --port <port>", "server port", parsePort, DEFAULT_PORT)
    .option("--tls", "connect over TLS")
    .option("--ca-file <file>", "PEM CA certificates to trust (implies --tls)")
    .option(
      "--secret-file <file>",
      `file holding the server's shared secret (or set ${SECRET_VARIABLE})`,
    );
}

/**
 * Parses a port number for commander.
 *
 * @param text The flag's value.
 * @returns The port.
 * @throws {InvalidArgumentError} When it is not a port.
 */
export function parsePort(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) {
    throw new InvalidArgumentError("expected a port number from 0 to 65535");
  }
  return port;
}

/**
 * Connects as the flags say, labelled with the subcommand, process and host;
 * on failure, prints why.
 *
 * @param flags The parsed flags.
 * @param command The subcommand, for the label.
 * @returns The client, or the exit code to return.
 */
export async function connectWith(
  flags: ConnectionFlags,
  command: string,
): Promise<LockClient | number> {
  const options: ConnectOptions = {
    hostname: flags.host,
    port: flags.port,
    label: `pklock ${command} (pid ${Deno.pid} on ${hostname()})`,
  };
  try {
    if (flags.caFile !== undefined) {
      options.tls = { caCerts: [await Deno.readTextFile(flags.caFile)] };
    } else if (flags.tls) {
      options.tls = true;
    }
    const secret = await readSecret(flags.secretFile, SECRET_VARIABLE);
    if (secret !== undefined) options.secret = secret;
  } catch (error) {
    console.error(`pklock: ${(error as Error).message}`);
    return ExitCode.Failure;
  }
  try {
    return await connect(options);
  } catch (error) {
    if (error instanceof ConnectionError || error instanceof RemoteError) {
      console.error(`pklock: ${error.message}`);
      return ExitCode.Connection;
    }
    throw error;
  }
}

/**
 * Reads a secret from a file (surrounding white space dropped) or, without a
 * file, from an environment variable.
 *
 * @param file The file named on the command line, if any.
 * @param variable The environment variable to fall back on.
 * @returns The secret, or `undefined` when neither gives one.
 * @throws {Deno.errors.NotFound} And other errors reading the file.
 */
export async function readSecret(
  file: string | undefined,
  variable: string,
): Promise<string | undefined> {
  return file === undefined
    ? Deno.env.get(variable)
    : (await Deno.readTextFile(file)).trim();
}

/**
 * Prints why a request to the server failed and picks the exit code; other
 * errors are bugs and propagate.
 *
 * @param error What the request threw.
 * @returns 4 when the connection failed, 1 when the server refused.
 * @throws {unknown} `error` itself, when it is neither.
 */
export function reportFailure(error: unknown): number {
  if (error instanceof ConnectionError || error instanceof RemoteError) {
    console.error(`pklock: ${error.message}`);
    return error instanceof ConnectionError
      ? ExitCode.Connection
      : ExitCode.Failure;
  }
  throw error;
}
