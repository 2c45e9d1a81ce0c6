/**
 * Server settings: embedded defaults, a JSONC file, and command-line overrides.
 * Every key is documented in settings.example.jsonc.
 *
 * @module
 */

import {
  findNodeAtLocation,
  getNodeValue,
  type ParseError,
  parseTree,
  printParseErrorCode,
} from "jsonc-parser";
import { z } from "zod";
import { checkAllowEntry, LOOPBACK } from "../message/allow_list.ts";
import {
  DEFAULT_FRAME_TIMEOUT_MS,
  DEFAULT_MAX_OUTPUT_BYTES,
} from "../message/connection_types.ts";
import { DEFAULT_MAX_TOTAL_OUTPUT_BYTES } from "../message/output_budget.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS } from "../message/server_options.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import {
  DEFAULT_MAX_LOCK_NAME_LENGTH,
  DEFAULT_PORT,
  MAX_WAIT_MS,
} from "../protocol/lock_protocol.ts";
import { PklockError } from "../protocol/errors.ts";

/**
 * Log level names, quietest last; `warn` is another spelling of `warning`
 * (as in most loggers' settings).
 */
export const LOG_LEVELS = [
  "trace",
  "debug",
  "info",
  "warning",
  "warn",
  "error",
  "fatal",
] as const;

const allowEntry = z.string().check((ctx) => {
  const problem = checkAllowEntry(ctx.value);
  if (problem !== null) {
    ctx.issues.push({ code: "custom", message: problem, input: ctx.value });
  }
});

/** A secret given inline or in a file, exactly one of the two. */
const secretSchema = z.strictObject({
  secret: z.string().min(16).optional(),
  secretFile: z.string().min(1).optional(),
}).refine(
  (given) => (given.secret === undefined) !== (given.secretFile === undefined),
  { message: 'give exactly one of "secret" and "secretFile"' },
);

/** Cluster mode: the lock space lives in etcd, shared by every node. */
const clusterSchema = z.strictObject({
  endpoints: z.array(z.url({ protocol: /^https?$/ })).min(1),
  prefix: z.string().regex(/^\/.*[^/]$/, {
    message: 'a key prefix starts with "/" and does not end with one',
  }).default("/pklock/v1"),
  ttl: z.int().min(2).max(3600).default(10),
  margin: z.int().min(0).default(1000),
  progressTimeout: z.int().min(100).max(MAX_WAIT_MS).default(5000),
  // The password: in "passwordFile", else in $PKLOCK_ETCD_PASSWORD; never
  // on the command line.
  auth: z.strictObject({
    user: z.string().min(1),
    passwordFile: z.string().min(1).optional(),
  }).optional(),
  tls: z.strictObject({
    caFile: z.string().min(1).optional(),
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
  }).refine(
    (tls) => (tls.certFile === undefined) === (tls.keyFile === undefined),
    {
      message: 'give both "certFile" and "keyFile", or neither',
    },
  ).optional(),
}).refine((cluster) => cluster.margin < cluster.ttl * 500, {
  message: '"margin" (ms) must be below half of "ttl" (s)',
}).refine(
  (cluster) =>
    cluster.tls === undefined ||
    cluster.endpoints.every((url) => url.startsWith("https:")),
  { message: '"tls" needs https:// endpoints' },
);

const settingsSchema = z.strictObject({
  host: z.string().min(1).default("127.0.0.1"),
  port: z.int().min(0).max(65535).default(DEFAULT_PORT),
  allowed: z.array(allowEntry).default([...LOOPBACK]),
  stateFile: z.string().min(1).default("pklock.state.json"),
  limits: z.strictObject({
    maxFrameBytes: z.int().min(64).max(64 * 1024 * 1024).default(
      DEFAULT_MAX_FRAME_BYTES,
    ),
    maxOutputBytes: z.int().min(1024).default(DEFAULT_MAX_OUTPUT_BYTES),
    maxTotalOutputBytes: z.int().min(1024).default(
      DEFAULT_MAX_TOTAL_OUTPUT_BYTES,
    ),
    frameTimeout: z.int().min(100).max(MAX_WAIT_MS).default(
      DEFAULT_FRAME_TIMEOUT_MS,
    ),
    handshakeTimeout: z.int().min(100).max(MAX_WAIT_MS).default(
      DEFAULT_HANDSHAKE_TIMEOUT_MS,
    ),
    maxLockNameLength: z.int().min(1).max(65536).default(
      DEFAULT_MAX_LOCK_NAME_LENGTH,
    ),
    // Unset: the open-file limit minus the server's own descriptors.
    maxConnections: z.int().min(1).optional(),
    // Unset: 1,000 from each address other than loopback.
    maxConnectionsPerIp: z.int().min(1).optional(),
    maxLocksPerConnection: z.int().min(1).default(10_000),
    // Absent: derived from the heap (see request_budget.ts).
    maxRequests: z.int().min(1).optional(),
    maxRequestsPerIp: z.int().min(1).optional(),
  }).prefault({}),
  auth: secretSchema.optional(),
  tls: z.strictObject({
    certFile: z.string().min(1),
    keyFile: z.string().min(1),
  }).optional(),
  heartbeat: z.strictObject({
    interval: z.int().min(10).max(MAX_WAIT_MS),
    timeout: z.int().min(20).max(MAX_WAIT_MS),
  }).refine((beat) => beat.timeout > beat.interval, {
    message: '"timeout" must be longer than "interval"',
  }).optional(),
  admin: secretSchema.optional(),
  metrics: z.strictObject({
    host: z.string().min(1).default("127.0.0.1"),
    port: z.int().min(0).max(65535).default(9464),
    lockPatterns: z.array(z.string().min(1)).default([]),
  }).optional(),
  alarms: z.strictObject({
    holdTime: z.int().min(1).max(MAX_WAIT_MS).optional(),
    rules: z.array(z.strictObject({
      pattern: z.string().min(1),
      holdTime: z.int().min(1).max(MAX_WAIT_MS),
    })).optional(),
  }).optional(),
  audit: z.strictObject({ file: z.string().min(1) }).optional(),
  cluster: clusterSchema.optional(),
  log: z.strictObject({
    level: z.enum(LOG_LEVELS).default("info"),
    format: z.enum(["text", "json"]).default("text"),
  }).prefault({}),
});

/** The complete server settings, defaults filled in. */
export type Settings = z.infer<typeof settingsSchema>;

/** Settings given on the command line; they override the file. */
export interface SettingsOverrides {
  /** Overrides `host`. */
  host?: string;
  /** Overrides `port`. */
  port?: number;
  /** Overrides `stateFile`. */
  stateFile?: string;
  /** Overrides `log.level`. */
  logLevel?: Settings["log"]["level"];
  /** Overrides `cluster.endpoints`: serve as a node of a cluster on etcd. */
  etcd?: string[];
}

/**
 * Reads the settings file, or a file a setting names (a certificate, a
 * secret).
 *
 * @param path The file.
 * @param what What the file is, for the message: `settings file`, or the
 *   setting that names it.
 * @returns The file's text.
 * @throws {SettingsError} When it cannot be read.
 */
export async function readSettingFile(
  path: string,
  what: string,
): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (cause) {
    throw new SettingsError(
      `Cannot read ${what} "${path}": ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** Invalid settings: the message names the file and the problem. */
export class SettingsError extends PklockError {
  /** Always `"SettingsError"`. */
  override name = "SettingsError";
}

/**
 * The settings the server uses with no file.
 *
 * @returns A fresh copy of the embedded defaults.
 */
export function defaultSettings(): Settings {
  return settingsSchema.parse({});
}

/**
 * Reads, parses and validates a settings file, then applies overrides.
 *
 * @param path The JSONC file, or `undefined` for the embedded defaults.
 * @param overrides Values from the command line.
 * @returns The settings.
 * @throws {SettingsError} When the file cannot be read or is invalid.
 */
export async function loadSettings(
  path: string | undefined,
  overrides: SettingsOverrides = {},
): Promise<Settings> {
  const settings = path === undefined
    ? defaultSettings()
    : parseSettings(await readSettingFile(path, "settings file"), path);
  if (overrides.host !== undefined) settings.host = overrides.host;
  if (overrides.port !== undefined) settings.port = overrides.port;
  if (overrides.stateFile !== undefined) {
    settings.stateFile = overrides.stateFile;
  }
  if (overrides.logLevel !== undefined) settings.log.level = overrides.logLevel;
  if (overrides.etcd !== undefined) {
    const parsed = clusterSchema.safeParse({
      ...settings.cluster,
      endpoints: overrides.etcd,
    });
    if (!parsed.success) {
      throw new SettingsError(
        `Invalid --etcd "${overrides.etcd.join(",")}": ${
          parsed.error.issues[0]!.message
        }`,
      );
    }
    settings.cluster = parsed.data;
  }
  return settings;
}

/**
 * Parses and validates settings text.
 *
 * @param text JSONC text.
 * @param path The file's name, for messages.
 * @returns The settings, defaults filled in.
 * @throws {SettingsError} On a syntax error, an unknown key or a wrong value.
 */
export function parseSettings(text: string, path: string): Settings {
  const errors: ParseError[] = [];
  const tree = parseTree(text, errors, { allowTrailingComma: true });
  const first = errors[0];
  if (first !== undefined) {
    throw new SettingsError(
      `Invalid settings file "${path}": ${where(text, first.offset)}: ${
        describeParseError(first)
      }`,
    );
  }
  const value = tree === undefined ? undefined : getNodeValue(tree);
  const parsed = settingsSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const path = [...issue.path] as (string | number)[];
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0]!;
      const node = tree && findNodeAtLocation(tree, [...path, key]);
      const at = node?.parent ? where(text, node.parent.offset) : "";
      return `${at ? at + ": " : ""}unknown key "${[...path, key].join(".")}"`;
    }
    const node = tree && findNodeAtLocation(tree, path);
    const at = node ? where(text, node.offset) + ": " : "";
    const key = path.length > 0 ? `"${path.join(".")}" ` : "";
    const problem = issue.message.replace(/^Invalid input: /, "");
    return `${at}${key}${problem[0]!.toLowerCase()}${problem.slice(1)}`;
  });
  throw new SettingsError(
    `Invalid settings file "${path}": ${problems.join("; ")}`,
  );
}

function describeParseError(error: ParseError): string {
  const name = printParseErrorCode(error.error);
  return name.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
}

function where(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  const column = offset - before.lastIndexOf("\n");
  return `line ${line}, column ${column}`;
}
