/**
 * The flags every client subcommand shares to reach a server (addresses, TLS,
 * secret, label, connect timeout), each with an environment variable for a
 * fleet's defaults, and the one place that turns them into a connection.
 * `--host` may list several servers, tried in turn: after connecting, what
 * names the server (hints, the command's environment) names the one reached.
 *
 * @module
 */

import { type Command, InvalidArgumentError, Option } from "commander";
import {
  connect,
  type ConnectOptions,
  type LockClient,
} from "../client/client.ts";
import { serverAddresses } from "../client/options.ts";
import { DEFAULT_PORT } from "../protocol/lock_protocol.ts";
import {
  ConnectionError,
  RemoteError,
  RequestTimeoutError,
} from "../message/errors.ts";
import { parseDuration } from "./duration.ts";
import { ExitCode } from "./exit_codes.ts";
import { explain } from "./hints.ts";
import type { StopSignals } from "./stop_signals.ts";

/** Parses `--connect-timeout`: a duration, and more than none. */
function parseTimeout(text: string): number {
  const seconds = parseDuration(text);
  if (seconds < 0.001) {
    throw new InvalidArgumentError("expected a duration of 1 ms or more");
  }
  return seconds;
}

/** Where the server is and how to reach it. */
export interface ConnectionFlags {
  /**
   * The servers to try in turn, separated by commas: `host`, `host:port` or
   * `[ipv6]:port` (as {@linkcode parseHosts} writes them); once connected,
   * the one reached.
   */
  host: string;
  /** The port of `host` entries without one; once connected, the one reached. */
  port: number;
  /** Connect over TLS. */
  tls?: boolean;
  /** A PEM file of CA certificates to trust (implies `tls`). */
  caFile?: string;
  /** A file holding the shared secret. */
  secretFile?: string;
  /** The name shown for this client in `status` and the audit log. */
  label?: string;
  /**
   * Seconds allowed for each of connecting, TLS, `hello` and every reply
   * (past a lock's wait, the client allows at most 1 s more).
   */
  connectTimeout: number;
}

/** The environment variable that may hold the shared secret. */
export const SECRET_VARIABLE = "PKLOCK_SECRET";

/** The default of `--connect-timeout`, in seconds. */
const CONNECT_TIMEOUT = 5;

/**
 * Adds `--host`, `--port`, `--tls`, `--ca-file`, `--secret-file`, `--label`
 * and `--connect-timeout`, each also read from a `PKLOCK_*` variable.
 *
 * @param command A client subcommand.
 * @returns The same command.
 */
export function withConnectionFlags(command: Command): Command {
  return command
    .addOption(
      new Option(
        "--host <address,...>",
        "server address, or several separated by commas, tried in turn (host, host:port, [ipv6]:port)",
      )
        .env("PKLOCK_HOST").argParser(parseHosts).default("127.0.0.1"),
    )
    .addOption(
      new Option(
        "-p, --port <port>",
        "server port (of --host entries without one)",
      )
        .env("PKLOCK_PORT").argParser(parsePort).default(DEFAULT_PORT),
    )
    .option("--tls", "connect over TLS (or set PKLOCK_TLS=1)")
    .addOption(
      new Option(
        "--ca-file <file>",
        "PEM CA certificates to trust (implies --tls)",
      )
        .env("PKLOCK_CA_FILE"),
    )
    .addOption(
      new Option(
        "--secret-file <file>",
        `file holding the server's shared secret (or set ${SECRET_VARIABLE})`,
      ).env("PKLOCK_SECRET_FILE"),
    )
    .addOption(
      new Option(
        "--label <text>",
        "name shown for this client in status and the audit log",
      ).env("PKLOCK_LABEL"),
    )
    .addOption(
      new Option(
        "--connect-timeout <duration>",
        "give up on a silent server after this long (connect, TLS, hello, replies)",
      ).env("PKLOCK_CONNECT_TIMEOUT").argParser(parseTimeout)
        .default(CONNECT_TIMEOUT, `${CONNECT_TIMEOUT}s`),
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
 * Parses `--host`: servers separated by commas, each `host`, `host:port` or
 * `[ipv6]:port`; a bare IPv6 address (two colons or more) is one host.
 *
 * @param text The flag's value.
 * @returns The entries, an IPv6 address in brackets, joined by commas.
 * @throws {InvalidArgumentError} When an entry is empty or not an address.
 */
export function parseHosts(text: string): string {
  const entries = text.split(",").map((entry) => {
    const trimmed = entry.trim();
    return /^[^\[\]]*:[^\[\]]*:/.test(trimmed) ? `[${trimmed}]` : trimmed;
  });
  if (entries.includes("")) {
    throw new InvalidArgumentError(
      "expected servers separated by commas, none empty",
    );
  }
  try {
    serverAddresses({ servers: entries, port: DEFAULT_PORT });
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  return entries.join(",");
}

/**
 * The flags as they apply once connected: `host` and `port` name the server
 * the client reached, for hints and for what is handed on.
 *
 * @param flags The parsed flags.
 * @param client The connected client.
 * @returns A copy of `flags` with the reached `host` and `port`.
 */
export function reachedFlags<T extends ConnectionFlags>(
  flags: T,
  client: LockClient,
): T {
  const { hostname, port } = client.address;
  return {
    ...flags,
    host: hostname.includes(":") ? `[${hostname}]` : hostname,
    port,
  };
}

/** Whether PKLOCK_TLS asks for TLS: any value but empty, 0, false, no, off. */
function tlsFromEnvironment(): boolean {
  const value = (Deno.env.get("PKLOCK_TLS") ?? "").trim().toLowerCase();
  return !["", "0", "false", "no", "off"].includes(value);
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown host";
  }
}

/**
 * Connects as the flags say, to the first of `--host`'s servers that answers,
 * labelled with `--label` or with the subcommand, process and host.
 * Connecting, TLS and `hello` together get `--connect-timeout` on this
 * process's clock for each server tried, whatever the server does, and so
 * does every reply later; a stop signal ends them too. On failure, prints
 * why.
 *
 * @param flags The parsed flags.
 * @param command The subcommand, for the default label.
 * @param stop Ends the attempt when a signal arrives.
 * @returns The client, or the exit code to return.
 */
export async function connectWith(
  flags: ConnectionFlags,
  command: string,
  stop: StopSignals,
): Promise<LockClient | number> {
  const options: ConnectOptions = {
    servers: flags.host.split(","),
    port: flags.port,
    label: flags.label ??
      `pklock ${command} (pid ${Deno.pid} on ${hostname()})`,
  };
  try {
    if (flags.caFile !== undefined) {
      options.tls = { caCerts: [await Deno.readTextFile(flags.caFile)] };
    } else if (flags.tls || tlsFromEnvironment()) {
      options.tls = true;
    }
    const secret = await readSecret(flags.secretFile, SECRET_VARIABLE);
    if (secret !== undefined) options.secret = secret;
  } catch (error) {
    console.error(`pklock: ${(error as Error).message}`);
    return ExitCode.Failure;
  }
  options.timeout = Math.max(1, Math.round(flags.connectTimeout * 1000));
  options.signal = stop.signal;
  try {
    return await connect(options);
  } catch (error) {
    if (stop.code !== undefined) return stop.code;
    if (error instanceof RangeError) {
      // An address the flags let through, such as --port 0.
      console.error(`pklock: ${error.message}`);
      return ExitCode.Usage;
    }
    reportFailure(error, flags);
    // Refused at hello (a wrong secret) or unreachable: no server to use.
    return ExitCode.Connection;
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
 * Prints why a request to the server failed, with a hint at the flag that
 * fixes it, and picks the exit code; other errors are bugs and propagate.
 *
 * @param error What the request threw.
 * @param flags How the server was reached, for the hint.
 * @returns 4 when the connection failed, the server did not answer or
 *   answered `unavailable` (a cluster node cut off from etcd), 1 when it
 *   refused otherwise.
 * @throws {unknown} `error` itself, when it is none of those.
 */
export function reportFailure(
  error: unknown,
  flags: ConnectionFlags,
): number {
  if (
    error instanceof ConnectionError || error instanceof RemoteError ||
    error instanceof RequestTimeoutError
  ) {
    const tls = flags.tls === true || tlsFromEnvironment();
    console.error(`pklock: ${explain(error, { ...flags, tls })}`);
    // A cluster node that cannot reach etcd serves no new lock: as good as
    // no server.
    return error instanceof RemoteError && error.code !== "unavailable"
      ? ExitCode.Failure
      : ExitCode.Connection;
  }
  throw error;
}
